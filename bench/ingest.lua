-- wrk script: POST varied, realistic consent events; record which event ids were acknowledged.
--
-- Each request carries a fresh event_id and subject_id, a mix of event types and category
-- choices, a real browser User-Agent, a client IP in X-Forwarded-For (the service is started with
-- 127.0.0.1 as a trusted proxy), sometimes Sec-GPC / DNT, and one in five as sendBeacon's
-- text/plain. The acknowledged ids (parsed from each 2xx body) are written to BENCH_ACKED_FILE so
-- the bench can check that exactly those events are in the database.

local path = os.getenv("BENCH_PATH") or "/v1/properties/itsailor/consent-events"
local acked_file = os.getenv("BENCH_ACKED_FILE")
local summary_file = os.getenv("BENCH_SUMMARY_FILE")
local threads = {}

local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
  "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.104 Mobile Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
}
local types = { "accept-all", "accept-all", "reject-all", "save-selection", "save-selection", "withdraw", "re-prompt" }
local pages = { "/", "/pricing", "/blog/consent-logs", "/docs/getting-started", "/dashboard" }

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

local function uuid4()
  return hex(8) .. "-" .. hex(4) .. "-4" .. hex(3) .. "-" .. string.format("%x", math.random(8, 11)) .. hex(3) .. "-" .. hex(12)
end

local function bool() return math.random() < 0.5 and "true" or "false" end

function request()
  sent = sent + 1
  local event_type = types[math.random(#types)]
  local categories = ""
  if event_type == "save-selection" then
    categories = string.format(',"categories":{"functional":%s,"analytics":%s,"marketing":%s}', bool(), bool(), bool())
  end
  local extra = ""
  if math.random() < 0.1 then extra = ',"gpc":true' end
  if math.random() < 0.2 then extra = extra .. ',"user_id":"acct-' .. math.random(1, 200000) .. '"' end
  local body = string.format(
    '{"event_id":"%s","subject_id":"%s","event_type":"%s","schema_version":1%s%s,"page_url":"https://itsailor.io%s?utm_source=news&ref=%d"}',
    uuid4(), uuid4(), event_type, categories, extra, pages[math.random(#pages)], math.random(1, 99999))
  local headers = {
    ["Content-Type"] = math.random() < 0.2 and "text/plain;charset=UTF-8" or "application/json",
    ["User-Agent"] = agents[math.random(#agents)],
    ["X-Forwarded-For"] = string.format("%d.%d.%d.%d", math.random(1, 223), math.random(0, 255), math.random(0, 255), math.random(1, 254)),
  }
  if math.random() < 0.05 then headers["Sec-GPC"] = "1" end
  if math.random() < 0.05 then headers["DNT"] = "1" end
  return wrk.format("POST", path, headers, body)
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
  if acked_file then
    local out = assert(io.open(acked_file, "w"))
    for _, thread in ipairs(threads) do
      for _, id in ipairs(thread:get("acked")) do out:write(id, "\n") end
      total_sent = total_sent + thread:get("sent")
      total_non2xx = total_non2xx + thread:get("non2xx")
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
