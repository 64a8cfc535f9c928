-- wrk script for read latencies: picks a random subject from BENCH_SUBJECTS (one uuid a line) and
-- asks for its state (GET) or, with BENCH_MODE=history, its DSR history (POST, BENCH_KEY bearer).
local mode = os.getenv("BENCH_MODE") or "state"
local key = os.getenv("BENCH_KEY")
local summary_file = os.getenv("BENCH_SUMMARY_FILE")
local subjects = {}
local threads = {}

function setup(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + thread_no * 104729)
  for line in io.lines(os.getenv("BENCH_SUBJECTS")) do subjects[#subjects + 1] = line end
  non2xx = 0
end

function request()
  local subject = subjects[math.random(#subjects)]
  if mode == "history" then
    return wrk.format("POST", "/v1/dsr/history",
      { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key },
      '{"subject_id":"' .. subject .. '","limit":100}')
  end
  return wrk.format("GET", "/v1/properties/itsailor/consents/" .. subject)
end

function response(status, headers, body)
  if status < 200 or status >= 300 then non2xx = non2xx + 1 end
end

function done(summary, latency, requests)
  local total_non2xx = 0
  for _, thread in ipairs(threads) do total_non2xx = total_non2xx + thread:get("non2xx") end
  local out = assert(io.open(summary_file, "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}',
    summary.requests, summary.duration, summary.bytes, summary.requests, total_non2xx, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
  out:close()
end
