-- Shared by the ingest wrk scripts (bench/ingest.lua, bench/ingest_fetch.lua): record which event
-- ids were acknowledged, and write wrk's summary as JSON for bench/run.py.
--
-- BENCH_ACKED_FILE receives the event_id of every 2xx answer, one a line, so the bench can check
-- that exactly those events are in the database; BENCH_SUMMARY_FILE receives the summary.

local acked_file = os.getenv("BENCH_ACKED_FILE")
local summary_file = os.getenv("BENCH_SUMMARY_FILE")
local threads = {}

function setup(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + thread_no * 7919)
  acked = {}
  sent = 0
  non2xx = 0
end

local function hex(n)
  local parts = {}
  for i = 1, n do parts[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(parts)
end

function uuid4()
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-" .. string.format("%x", math.random(8, 11)) .. hex(3) .. "-" .. hex(12)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    local id = body:match('"event_id":"([%x%-]+)"')
    if id then acked[#acked + 1] = id end
  else
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total_sent, total_non2xx = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_non2xx = total_non2xx + thread:get("non2xx")
  end
  if acked_file then
    local out = assert(io.open(acked_file, "w"))
    for _, thread in ipairs(threads) do
      for _, id in ipairs(thread:get("acked")) do out:write(id, "\n") end
    end
    out:close()
  end
  if summary_file then
    local out = assert(io.open(summary_file, "w"))
    local e = summary.errors
    out:write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,"sent":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}',
      summary.requests, summary.duration, summary.bytes, total_sent, total_non2xx, e.connect, e.read, e.write, e.timeout, e.status,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
    out:close()
  end
end
