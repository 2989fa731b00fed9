#!/usr/bin/env bash
# The README's "Try it", as a newcomer runs it on a fresh clone: after `npm ci`,
# `npx mlxs serve` (the demo model, nothing downloaded) answers the README's two curl
# requests. Prints "try-it: ok" or "try-it: FAILED ..." and exits 0 or 1. Bounded: the
# daemon gets 120 s to listen and each request 60 s.
set -uo pipefail
cd "$(dirname "$0")/.."

for cmd in "npm ci && npx mlxs serve" "npm ci && npm test"; do
  grep -qF "$cmd" README.md || { echo "try-it: FAILED: the README no longer says \`$cmd\`"; exit 1; }
done

home=$(mktemp -d)
log="$home/serve.log"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
# its own process group, stopped as Ctrl-C in a terminal stops it: the signal reaches npx and the daemon
MLXS_HOME="$home" NO_COLOR=1 setsid npx mlxs serve --port "$port" >"$home/stdout" 2>"$log" &
pid=$!
fail() { echo "try-it: FAILED: $1"; echo "--- daemon's stderr:"; cat "$log"; kill -KILL -- -"$pid" 2>/dev/null; rm -rf "$home"; exit 1; }

for _ in $(seq 1 240); do
  grep -q "mlxs listening on" "$log" && break
  kill -0 "$pid" 2>/dev/null || fail "mlxs serve exited before listening"
  sleep 0.5
done
grep -q "mlxs listening on" "$log" || fail "mlxs serve did not listen within 120 s"

url="http://127.0.0.1:$port"
openai=$(curl -sS -m 60 "$url/v1/chat/completions" -H "Content-Type: application/json" \
  -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 40}' -w '\n%{http_code}') || fail "the OpenAI request got no answer"
[ "$(tail -n 1 <<<"$openai")" = 200 ] || fail "the OpenAI request: $(tail -n 1 <<<"$openai")"
grep -q '"chat.completion"' <<<"$openai" || fail "the OpenAI answer is not a chat.completion"
anthropic=$(curl -sS -m 60 "$url/v1/messages" -H "Content-Type: application/json" \
  -d '{"max_tokens": 40, "messages": [{"role": "user", "content": "Hello"}]}' -w '\n%{http_code}') || fail "the Anthropic request got no answer"
[ "$(tail -n 1 <<<"$anthropic")" = 200 ] || fail "the Anthropic request: $(tail -n 1 <<<"$anthropic")"
grep -q '"type":"message"' <<<"$anthropic" || fail "the Anthropic answer is not a message"

kill -INT -- -"$pid"
for _ in $(seq 1 120); do grep -q "^mlxs: stopped" "$log" && break; sleep 0.5; done
grep -q "^mlxs: stopped" "$log" || fail "mlxs serve did not stop within 60 s of SIGINT"
wait "$pid" 2>/dev/null
curl -s -m 5 -o /dev/null "$url/health" && fail "something still answers on $url after the stop"
rm -rf "$home"
echo "try-it: ok"
