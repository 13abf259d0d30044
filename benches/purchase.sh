#!/usr/bin/env bash
# The purchase benchmark: the same cycle (product page, add to cart,
# checkout, clear cart) with baton and with Playwright, on one demo shop and
# one Chromium, in one run. Prints both medians and their ratio, and baton's
# own peak memory while running cycles.
#
#   benches/purchase.sh            # 2 rounds x 10 cycles each, alternating
#   ROUNDS=3 CYCLES=20 benches/purchase.sh
#   PROFILE=realistic benches/purchase.sh   # heavy pages, server think time
#   GAP_MS=1000                             # untimed pause between cycles
#
# Each tool opens one page per cycle. baton opens the next run's page in
# the pause between cycles (spare pages, on by default), as it does
# between its 25-35 s cycles; Playwright opens its page when the cycle
# starts. `BATON_BENCH_COMPARE=spare|trace cargo bench --bench purchase`
# measures one of baton's choices on against off.
#
# Also prints the floor: the shop's own time per cycle (every request's
# time in the server, think time included), which no client goes below.
#
# Needs Debian's chromium and Node.js; installs playwright-core itself
# (into benches/node, not committed).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-2}
CYCLES=${CYCLES:-10}
PROFILE=${PROFILE:-light}
GAP_MS=${GAP_MS:-1000}
CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
[ -n "$CHROMIUM" ] || { echo "no chromium: apt-get install -y chromium" >&2; exit 1; }
command -v node >/dev/null || { echo "no node: install Node.js" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet
cargo bench --bench purchase --no-run --quiet 2>/dev/null

if [ ! -d benches/node/node_modules/playwright-core ]; then
  echo "== installing playwright-core"
  mkdir -p benches/node
  (cd benches/node && npm install --no-save --no-audit --no-fund --silent playwright-core@1 >/dev/null)
fi
PW_VERSION=$(node -p "require('./benches/node/node_modules/playwright-core/package.json').version")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SHOP="http://127.0.0.1:$PORT"
target/release/baton demo-shop --port "$PORT" --profile "$PROFILE" >/dev/null 2>&1 &
SHOP_PID=$!
trap 'kill $SHOP_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.05
done

served_ms() { curl -s "$SHOP/admin/served" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ms"])'; }

baton_ms=()
pw_ms=()
floor_ms=()
for round in $(seq "$ROUNDS"); do
  echo "== round $round: baton"
  before=$(served_ms)
  out=$(BATON_BENCH_SHOP="$SHOP" BATON_BENCH_CYCLES="$CYCLES" BATON_BENCH_GAP_MS="$GAP_MS" cargo bench --quiet --bench purchase 2>/dev/null)
  after=$(served_ms)
  # Every cycle, warm-ups included (2), went through the shop.
  floor_ms+=("$(python3 -c "print(($after - $before) / ($CYCLES + 2))")")
  echo "$out" | grep -v '^BATON_CYCLE_MS='
  baton_ms+=("$(echo "$out" | sed -n 's/^BATON_CYCLE_MS=//p')")
  echo "== round $round: playwright-core $PW_VERSION"
  # ES modules resolve imports next to the script, so run a copy there.
  cp benches/purchase.mjs benches/node/purchase.mjs
  out=$(cd benches/node && SHOP="$SHOP" CYCLES="$CYCLES" GAP_MS="$GAP_MS" CHROMIUM="$CHROMIUM" node purchase.mjs)
  echo "$out" | grep -v '^PLAYWRIGHT_CYCLE_MS='
  pw_ms+=("$(echo "$out" | sed -n 's/^PLAYWRIGHT_CYCLE_MS=//p')")
done

echo "== baton's own memory while running cycles (without Chromium)"
work=$(mktemp -d)
cp -r scripts "$work/"
sed -e 's/port: 8099/port: 0/' -e 's/dashboard: 127.0.0.1:7878/dashboard: 127.0.0.1:0/' \
    -e 's/interval: 25s..35s/interval: 1s/' flows.yaml > "$work/flows.yaml"
(cd "$work" && BATON_TEST_MODE=1 RUST_LOG=error exec "$OLDPWD/target/release/baton" run --cycles 5 >/dev/null 2>&1) &
RUN_PID=$!
peak=0
while kill -0 $RUN_PID 2>/dev/null; do
  kb=$(awk '/VmHWM/ {print $2}' /proc/$RUN_PID/status 2>/dev/null || echo 0)
  [ -n "$kb" ] && [ "$kb" -gt "$peak" ] && peak=$kb
  sleep 0.05
done
rm -rf "$work"

python3 - "$peak" "$PROFILE" "${baton_ms[@]}" -- "${pw_ms[@]}" -- "${floor_ms[@]}" <<'PY'
import statistics, sys
args = sys.argv[1:]
peak_kb = int(args[0]); profile = args[1]; rest = args[2:]
i = rest.index("--")
b = [float(x) for x in rest[:i]]; rest = rest[i+1:]
i = rest.index("--")
p = [float(x) for x in rest[:i]]; f = [float(x) for x in rest[i+1:]]
mb, mp, mf = statistics.median(b), statistics.median(p), statistics.median(f)
print()
print(f"profile: {profile}")
print(f"floor (the shop's own time per cycle): {mf:7.0f} ms  {[round(x) for x in f]}")
print(f"baton / floor: {mb/mf:.2f}   playwright / floor: {mp/mf:.2f}")
print(f"baton      median of round medians: {mb:7.0f} ms per cycle  {b}")
print(f"playwright median of round medians: {mp:7.0f} ms per cycle  {p}")
print(f"ratio baton / playwright: {mb/mp:.2f}  (goal: at or below 1.0; design target 0.75)")
print(f"baton peak RSS while running cycles: {peak_kb/1024:.1f} MB  (target: under 30 MB)")
PY
