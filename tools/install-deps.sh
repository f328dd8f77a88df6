#!/usr/bin/env bash
# Installs the system packages pushgate's demo and tests need, only when missing.
# Debian/Ubuntu; runs apt-get update at most once per invocation.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
for extra in "$@"; do
  case "$extra" in
    browser)
      command -v chromium >/dev/null 2>&1 || need+=(chromium)
      command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
      dpkg -s fonts-nanum >/dev/null 2>&1 || need+=(fonts-nanum)
      ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the packaged redis-server as a service; pushgate runs its own.
if [[ " ${need[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
