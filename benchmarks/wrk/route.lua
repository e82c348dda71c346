-- POST /route with bodies read from BODIES (one JSON object per line), counting statuses.
-- With IDS_OUT set, every returned decision id is appended to that file (for feedback.lua).
local bodies = {}
local counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("BODIES")) do bodies[#bodies + 1] = line end
  i = math.random(#bodies)
  ok, bad = 0, 0
  local out = os.getenv("IDS_OUT")
  -- fully buffered, no flush per response: the trivial baseline records nothing, so recording the
  -- ids should cost the client as little as possible; the buffer is written out when wrk exits
  if out then ids = io.open(out, "a"); ids:setvbuf("full", 65536) end
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/route", {["Content-Type"] = "application/json"}, bodies[i])
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if ids then ids:write(body:match('"decision_id":%s*"(%x+)"'), "\n") end
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total = 0, 0
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
  end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "ok": %d, "not_ok": %d, "errors": %d, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, ok_total, bad_total,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
