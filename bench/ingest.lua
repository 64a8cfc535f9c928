-- wrk script: POST varied, realistic consent events; record which event ids were acknowledged.
--
-- Each request carries a fresh event_id and subject_id, a mix of event types and category
-- choices, a real browser User-Agent, a client IP in X-Forwarded-For (the service is started with
-- 127.0.0.1 as a trusted proxy), sometimes Sec-GPC / DNT, and one in five as sendBeacon's
-- text/plain. The acknowledged ids and wrk's summary are recorded by bench/acks.lua.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "acks.lua")

local path = os.getenv("BENCH_PATH") or "/v1/properties/itsailor/consent-events"

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
