-- POST /feedback for the decision ids in IDS (one per line, from route.lua), round robin, each
-- with a fresh idempotency key, so every request is a new durable feedback; counts statuses.
-- Keys start with KEY_PREFIX: wrk seeds math.random the same way in every run, so two runs against
-- one server need different prefixes, or the second run's keys repeat the first's (duplicates).
local ids = {}
local threads = {}

function setup(thread)
  thread:set("offset", #threads)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
  i = math.random(#ids)
  ok, bad, n = 0, 0, 0
  prefix = os.getenv("KEY_PREFIX") or ""
end

function request()
  i = i % #ids + 1
  n = n + 1
  local body = string.format(
    '{"decision_id":"%s","signals":[{"source":"user","kind":"thumbs","value":true}],"cost_usd":0.001,"idempotency_key":"%s%d-%d-%d"}',
    ids[i], prefix, offset, n, math.random(1000000000))
  return wrk.format("POST", "/feedback", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
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
