//! `pushgate demo`: the example config and scripts, written to a scratch dir and run
//! with a managed Redis, so a newcomer sees the whole appliance on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use pushgate::app::App;
use pushgate::config::Config;

const EXAMPLE_CONFIG: &str = include_str!("../pushgate.example.toml");
const SCRIPTS: &[(&str, &str)] = &[
    ("transfer.rhai", include_str!("../scripts/transfer.rhai")),
    ("notice.rhai", include_str!("../scripts/notice.rhai")),
];

pub async fn run(
    dir: Option<PathBuf>,
    admin: SocketAddr,
    ephemeral_ports: bool,
) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => scratch_dir().context("creating the demo's scratch dir")?,
    };
    std::fs::create_dir_all(dir.join("scripts"))
        .with_context(|| format!("creating {}", dir.display()))?;
    for (name, source) in SCRIPTS {
        std::fs::write(dir.join("scripts").join(name), source)?;
    }
    let (key, hash) = pushgate::admin::new_api_key();
    // A one-time admin password, printed once and stored only as its hash.
    let password: String = {
        let bytes: [u8; 9] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    };
    let password_hash = pushgate::admin::hash_password(&password).map_err(anyhow::Error::msg)?;
    let config_text = EXAMPLE_CONFIG
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"{admin}\""),
        )
        .replace(
            "# [[api_key]]\n# name = \"ops-console\"\n# sha256 = \"<64 hex digits>\"\n# scopes = [\"read\", \"control\"]",
            &format!("[[api_key]]\nname = \"demo\"\nsha256 = \"{hash}\"\nscopes = [\"read\", \"control\"]"),
        );
    // FCM is unreachable from a demo machine: deliver to the strict emulator instead.
    let emulator = pushgate::emulator::Emulator::start(emulator_args()).await?;
    let account = dir.join("fcm-emulator-service-account.json");
    std::fs::write(&account, emulator.service_account_json())?;
    let config_text = format!(
        "{config_text}\n[[user]]\nname = \"admin\"\npassword = \"{password_hash}\"\nrole = \"admin\"\n\n[fcm]\nservice_account = \"{}\"\nendpoint = \"http://{}\"\n",
        account.display(),
        emulator.addr()
    );
    let config_text = if ephemeral_ports {
        config_text
            .replace("127.0.0.1:9101", "127.0.0.1:0")
            .replace("127.0.0.1:9102", "127.0.0.1:0")
    } else {
        config_text
    };
    let config_path = dir.join("pushgate.toml");
    std::fs::write(&config_path, config_text)?;
    let config = Config::load(&config_path)?;
    let app = App::start(config, &config_path).await?;
    println!("pushgate demo is running (Ctrl-C stops it)");
    println!("  config:    {}", config_path.display());
    println!(
        "  ports:     fep-transfer ndjson on 127.0.0.1:9101, fep-notice EUC-KR fixed-width on 127.0.0.1:9102"
    );
    println!(
        "  console:   http://{}/  (user admin, one-time password {password})",
        app.admin_addr
    );
    println!("  admin API: http://{}/api/v1/ports", app.admin_addr);
    println!(
        "  FCM:       emulator at http://{0} (accepted pushes: http://{0}/stats)",
        emulator.addr()
    );
    println!("  API key:   {key}");
    println!(
        "  try:       echo '{{\"uniqueKey\":\"demo-1\",\"device_id\":\"tok-1\",\"msg_title\":\"이체 완료\",\"msg_contents\":\"10,000원\"}}' | nc -q1 127.0.0.1 9101"
    );
    println!(
        "             curl -H 'Authorization: Bearer {key}' http://{}/api/v1/ports",
        app.admin_addr
    );
    let feeder = tokio::spawn(feed(app.supervisor.clone(), app.config_snapshot()));
    let result = app.run_until_signalled().await;
    feeder.abort();
    emulator.shutdown().await;
    result
}

/// A new private directory for the demo, kept after it exits: a random name, created
/// exclusively, mode 0700. A predictable name such as `/tmp/pushgate-demo-{pid}` lets
/// another local user create it (or a symlink) first, and then read or plant the
/// demo's config, scripts and Redis data.
fn scratch_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    Ok(tempfile::Builder::new()
        .prefix("pushgate-demo-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?
        .keep())
}

/// The emulator with a few realistic faults, so the demo shows retries too.
fn emulator_args() -> pushgate::emulator::EmulatorArgs {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: pushgate::emulator::EmulatorArgs,
    }
    let cli = <Cli as clap::Parser>::parse_from([
        "fcm-emulator",
        "--listen",
        "127.0.0.1:0",
        "--fail-503",
        "0.05",
        "--unregistered-prefix",
        "dead-",
    ]);
    cli.args
}

/// A gentle stream of realistic pushes into both ports, as the FEP would send them:
/// transfer alerts as JSON lines, notices as EUC-KR fixed-width telegrams.
async fn feed(
    supervisor: std::sync::Arc<pushgate::supervisor::Supervisor>,
    config: std::sync::Arc<Config>,
) {
    use pushgate::ingest::fixed::encode_fixed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TITLES: &[(&str, &str)] = &[
        ("입금 알림", "원이 입금되었습니다"),
        ("출금 알림", "원이 출금되었습니다"),
        ("이체 완료", "원 이체가 완료되었습니다"),
        ("카드 승인", "원 결제가 승인되었습니다"),
    ];
    let mut n: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(900)).await;
        n += 1;
        let zone = config.zone();
        let now = chrono::Utc::now().with_timezone(&zone);
        let key = format!("DEMO-{}-{n:06}", now.format("%Y%m%d%H%M%S"));
        let (title, tail) = TITLES[(n % 4) as usize];
        let amount = 10_000 * (1 + n % 37);
        // About one in ten goes to a token FCM no longer knows; one in eight is reserved.
        let token = if n % 10 == 3 {
            format!("dead-{n:08}")
        } else {
            format!("demo-token-{:0>140}", n % 97)
        };
        let reserved = if n % 8 == 5 {
            (now + chrono::Duration::minutes(2))
                .format("%Y%m%d%H%M%S")
                .to_string()
        } else {
            String::new()
        };
        let mut message = serde_json::json!({
            "uniqueKey": key,
            "sndn_rsev_hour": reserved,
            "csno": format!("{:010}", 4_000_000 + n % 500),
            "uuid_id": format!("U{n:08}"),
            "device_id": token,
            "msg_title": title,
            "msg_contents": format!("{amount}{tail}"),
            "D_servicename": "TRF",
            "push_grp_id": "",
            "cust_telno": format!("010{:08}", 20_000_000 + n % 9000),
        });
        let notice = n.is_multiple_of(5);
        let port_name = if notice { "fep-notice" } else { "fep-transfer" };
        if notice {
            // Marketing at night is held by the notice script; one in three is a group notice.
            message["D_servicename"] = (if n.is_multiple_of(2) { "MKT" } else { "NTC" }).into();
            message["msg_title"] = "공지사항".into();
            message["msg_contents"] = "점검 안내: 오늘 23시부터 30분간 이체가 중단됩니다".into();
            if n.is_multiple_of(3) {
                message["push_grp_id"] = "all-users".into();
            }
        }
        let Some(port) = config.port(port_name) else {
            continue;
        };
        let Some(addr) = supervisor.port(port_name).await.and_then(|v| v.bound) else {
            continue;
        };
        let body = match port.payload {
            pushgate::config::Payload::Fixed => match message
                .as_object()
                .map(|m| encode_fixed(&port.fields, m, port.encoding))
            {
                Some(Ok(bytes)) => bytes,
                _ => continue,
            },
            pushgate::config::Payload::Json => {
                port.encoding.encode(&message.to_string()).into_owned()
            }
        };
        let mut frame = Vec::new();
        if port.framing().encode(&body, &mut frame).is_err() {
            continue;
        }
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await {
            let _ = stream.write_all(&frame).await;
            let mut ack = [0u8; 512];
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut ack)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_scratch_dir_is_new_private_and_unpredictable() {
        let first = super::scratch_dir().expect("scratch dir");
        let second = super::scratch_dir().expect("scratch dir");
        assert_ne!(first, second, "each demo gets its own dir");
        for dir in [&first, &second] {
            let mode = std::fs::metadata(dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{} is private", dir.display());
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            assert!(name.starts_with("pushgate-demo-"), "{name}");
            assert_ne!(name, format!("pushgate-demo-{}", std::process::id()));
            std::fs::remove_dir(dir).unwrap();
        }
    }
}
