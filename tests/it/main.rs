//! Integration tests: real redis-server processes, real sockets, the real binary.

mod ads;
mod api;
mod apns;
mod apps;
mod browser;
mod browser_support;
mod console;
mod delivery;
mod fallback;
mod ha;
mod ingest;
mod lifecycle;
mod operations;
mod process;
mod proxy;
mod proxy_support;
mod receipts;
mod redis_outage;
mod routes;
mod security;
mod store;
mod support;
