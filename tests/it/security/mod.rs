//! One test per attack from the security review (issue 11): each pins a protection
//! that the first stage lacked. Grouped by the part under attack.

mod console;
mod index;
mod managed_redis;
mod ports;
