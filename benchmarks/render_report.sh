#!/usr/bin/env bash
# Screenshot a bench report with headless Chromium, to check how report.html renders (offline: no network, no
# profile, no GPU). Needs Debian's `chromium` (apt-get install chromium) or CHROMIUM=/path/to/chrome.
# Usage: benchmarks/render_report.sh DIR/report.html OUT.png [WIDTH,HEIGHT]   (default 1400,3000)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 REPORT.html OUT.png [WIDTH,HEIGHT]" >&2; exit 2; }
html=$(realpath "$1"); png=$(realpath -m "$2"); size=${3:-1400,3000}
[ -f "$html" ] || { echo "error: no such file: $1" >&2; exit 2; }
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$browser" ] || { echo "error: chromium not found; apt-get install chromium, or set CHROMIUM" >&2; exit 2; }
profile=$(mktemp -d); trap 'rm -rf "$profile"' EXIT
rm -f "$png"
# --no-sandbox: Chromium refuses to run as root otherwise. The rest keep it off the network and quiet.
timeout 180 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
  --user-data-dir="$profile" --window-size="$size" --screenshot="$png" "file://$html" >"$profile/chromium.log" 2>&1 || true
[ -s "$png" ] || { echo "error: chromium wrote no screenshot:" >&2; tail -5 "$profile/chromium.log" >&2; exit 1; }
echo "wrote $png"
