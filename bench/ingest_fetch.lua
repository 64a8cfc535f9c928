-- wrk script, the second ingest load: what a banner sends with fetch(keepalive) from the page's
-- own origin, straight to the service (no proxy in front, no X-Forwarded-For).
--
-- Small JSON bodies: an equal mix of accept-all, reject-all and a save-selection naming all four
-- categories, each with a fresh event_id and subject_id; one User-Agent and no page URL. Against
-- bench/ingest.lua's varied events it takes the cheapest path a real event can take, so the
-- service's fixed costs per event weigh the most here. The acknowledged ids and wrk's summary are
-- recorded by bench/acks.lua.

dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "acks.lua")

local path = os.getenv("BENCH_PATH") or "/v1/properties/itsailor/consent-events"
local headers = {
  ["Content-Type"] = "application/json",
  ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
}
local shapes = {
  '"event_type":"accept-all"',
  '"event_type":"reject-all"',
  '"event_type":"save-selection","categories":{"necessary":true,"functional":true,"analytics":false,"marketing":false}',
}

function request()
  sent = sent + 1
  local body = string.format(
    '{"event_id":"%s","subject_id":"%s",%s,"schema_version":1}',
    uuid4(), uuid4(), shapes[(sent % 3) + 1])
  return wrk.format("POST", path, headers, body)
end
