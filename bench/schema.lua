-- wrk script for the schema endpoint: plain GETs, or conditional ones with BENCH_ETAG.
local etag = os.getenv("BENCH_ETAG")
local summary_file = os.getenv("BENCH_SUMMARY_FILE")
local threads = {}

function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end

function request()
  local headers = {}
  if etag and etag ~= "" then headers["If-None-Match"] = etag end
  return wrk.format("GET", "/v1/properties/itsailor/schema", headers)
end

function response(status, headers, body)
  if status ~= 200 and status ~= 304 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  local out = assert(io.open(summary_file, "w"))
  local e = summary.errors
  out:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":0,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}',
    summary.requests, summary.duration, summary.bytes, summary.requests, total, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
  out:close()
end
