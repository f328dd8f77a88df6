//! `pushgate demo`: the example config and scripts, written to a scratch dir and run
//! with a managed Redis, so a newcomer sees the whole appliance on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use pushgate::app::App;
use pushgate::config::Config;

const EXAMPLE_CONFIG: &str = include_str!("../pushgate.example.toml");
const SCRIPTS: &[(&str, &str)] = &[
    ("transfer.rhai", include_str!("../scripts/transfer.rhai")),
    ("notice.rhai", include_str!("../scripts/notice.rhai")),
];

pub async fn run(dir: Option<PathBuf>, admin: SocketAddr) -> anyhow::Result<()> {
    let dir = match dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("pushgate-demo-{}", std::process::id())),
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
    let result = app.run_until_signalled().await;
    emulator.shutdown().await;
    result
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
