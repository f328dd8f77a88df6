//! `pushgate send`: send telegrams to a port by hand and print the acks, for operators
//! testing a port. Each input line is one JSON message; it is framed (and, for a
//! fixed-width port, laid out) the way the port expects.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pushgate::config::{Config, FramingKind, Payload};
use pushgate::ingest::charset::Charset;
use pushgate::ingest::fixed::{FieldSpec, encode_fixed};
use pushgate::ingest::frame::Framing;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where the port listens, HOST:PORT (default: the port's `addr` from --config).
    #[arg(long)]
    addr: Option<String>,
    /// Take framing, encoding and field layout from this config's port (--port).
    #[arg(long, requires = "port")]
    config: Option<PathBuf>,
    /// The port's name in --config.
    #[arg(long)]
    port: Option<String>,
    #[arg(long, value_enum, default_value = "ndjson")]
    framing: FramingArg,
    #[arg(long, default_value_t = 4)]
    len_digits: u8,
    #[arg(long, default_value = "utf-8")]
    encoding: String,
    /// A file of JSON messages, one per line, or - for standard input.
    input: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FramingArg {
    Ndjson,
    AsciiLen,
    U32be,
}

struct Wire {
    addr: String,
    framing: Framing,
    charset: Charset,
    layout: Option<Vec<FieldSpec>>,
}

fn wire(args: &SendArgs) -> anyhow::Result<Wire> {
    if let (Some(path), Some(name)) = (&args.config, &args.port) {
        let config = Config::load(path)?;
        let port = config
            .port(name)
            .with_context(|| format!("no port named {name:?} in {}", path.display()))?;
        return Ok(Wire {
            addr: args
                .addr
                .clone()
                .or_else(|| port.addresses().first().cloned())
                .with_context(|| format!("port {name:?} has no address"))?,
            framing: port.framing(),
            charset: port.encoding,
            layout: (port.payload == Payload::Fixed).then(|| port.fields.clone()),
        });
    }
    let charset = match args.encoding.as_str() {
        "utf-8" => Charset::Utf8,
        "euc-kr" => Charset::EucKr,
        other => anyhow::bail!("--encoding {other:?}: use utf-8 or euc-kr"),
    };
    let framing = match args.framing {
        FramingArg::Ndjson => FramingKind::Ndjson,
        FramingArg::AsciiLen => FramingKind::AsciiLen,
        FramingArg::U32be => FramingKind::U32be,
    };
    Ok(Wire {
        addr: args
            .addr
            .clone()
            .context("--addr (or --config and --port) is needed")?,
        framing: match framing {
            FramingKind::Ndjson => Framing::Ndjson,
            FramingKind::AsciiLen => Framing::AsciiLen {
                digits: args.len_digits,
            },
            FramingKind::U32be => Framing::U32Be,
        },
        charset,
        layout: None,
    })
}

/// One telegram for a message line.
fn telegram(wire: &Wire, line: &str) -> anyhow::Result<Vec<u8>> {
    let body = match &wire.layout {
        Some(layout) => {
            let Value::Object(map) = serde_json::from_str(line)
                .context("a fixed-width port needs JSON objects as input")?
            else {
                anyhow::bail!("each line must be a JSON object");
            };
            encode_fixed(layout, &map, wire.charset)?
        }
        None => wire.charset.encode(line).into_owned(),
    };
    let mut out = Vec::new();
    wire.framing.encode(&body, &mut out)?;
    Ok(out)
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let wire = wire(&args)?;
    let lines: Vec<String> = if args.input.as_os_str() == "-" {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading {}", args.input.display()))?
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let lines: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    let mut stream = tokio::net::TcpStream::connect(&wire.addr)
        .await
        .with_context(|| format!("connecting to {}", wire.addr))?;
    let mut bytes = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        bytes.extend(telegram(&wire, line).with_context(|| format!("line {}", n + 1))?);
    }
    stream.write_all(&bytes).await?;
    let mut buf = Vec::new();
    let mut acks = 0;
    let mut chunk = [0u8; 65536];
    while acks < lines.len() {
        while let Some(frame) = wire.framing.decode(&buf, 1 << 20)? {
            let text = wire
                .charset
                .decode(&buf[frame.body.clone()])
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if !text.is_empty() {
                println!("{text}");
                acks += 1;
            }
            buf.drain(..frame.consumed);
        }
        if acks >= lines.len() {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
            .await
            .context("no ack within 30 s")??;
        if n == 0 {
            anyhow::bail!(
                "the port closed the connection after {acks} of {} acks",
                lines.len()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
