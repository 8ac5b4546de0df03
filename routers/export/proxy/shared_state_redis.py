"""The Redis side of the proxy's shared state: the Lua scripts that change shared state atomically, and how
their answers are read. Used by :mod:`routers.export.proxy.shared_state`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "COUNTERS_LUA",
    "FEEDBACK_LUA",
    "REPLACE_ROW_LUA",
    "RESTORE_COUNTER_LUA",
    "SEED_ROW_LUA",
    "flat_to_row",
    "row_fields",
]

#: Fade a category's evidence row and count one feedback, atomically; publish and return the new row.
#: KEYS: row hash, seen-marker of this feedback. ARGV: forgetting, model, score, channel, replica, row name,
#: then the row's initial fields (seeded when the hash does not exist yet). A feedback whose marker exists
#: (pushed before, its reply lost) is not counted twice.
FEEDBACK_LUA = """
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 604800) then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
    redis.call('HSET', KEYS[1], 'v', '0')
  end
  local f = tonumber(ARGV[1])
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if all[i] ~= 'v' then
      redis.call('HSET', KEYS[1], all[i], string.format('%.17g', tonumber(all[i + 1]) * f))
    end
  end
  local score = tonumber(ARGV[3])
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[2] .. '|s', string.format('%.17g', score))
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[2] .. '|f', string.format('%.17g', 1 - score))
  redis.call('HINCRBY', KEYS[1], 'v', 1)
end
local row = redis.call('HGETALL', KEYS[1])
redis.call('PUBLISH', ARGV[4], cjson.encode({k = 'row', from = ARGV[5], row = ARGV[6], h = row}))
return row
"""


#: Add a batch of increments once (KEYS[1] marks the batch as applied; KEYS[2..] are the counters; ARGV: the
#: channel and replica id, then amount, ttl per counter), publish the counters' new values on the channel and
#: return them. A batch sent again after a lost answer is not added twice.
COUNTERS_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 604800) then
  for i = 2, #KEYS do
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[2 * i - 1])
    if tonumber(ARGV[2 * i]) > 0 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  end
end
local out, kv = {}, {}
for i = 2, #KEYS do
  local v = redis.call('GET', KEYS[i])
  out[#out + 1] = v
  kv[#kv + 1] = KEYS[i]
  kv[#kv + 1] = v
end
redis.call('PUBLISH', ARGV[1], cjson.encode({k = 'counts', from = ARGV[2], c = kv}))
return out
"""

#: Replace an evidence row (PUT /v1/feedback/state): KEYS[1] the row hash; ARGV: channel, replica, row name,
#: then the row's fields. Its version goes up by one (replicas take it as newer). Publishes and returns the row.
REPLACE_ROW_LUA = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0') + 1
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'v', tostring(v))
local row = redis.call('HGETALL', KEYS[1])
redis.call('PUBLISH', ARGV[1], cjson.encode({k = 'row', from = ARGV[2], row = ARGV[3], h = row}))
return row
"""

#: Give a counter Redis lost back the largest value any replica last saw in it, once, whatever the order in which
#: replicas come back and push their own deltas: KEYS[2] remembers the value restored so far (it exists only
#: after a loss), and a larger one adds the difference. ARGV: the value this replica last saw, the ttl.
RESTORE_COUNTER_LUA = """
local seen = tonumber(ARGV[1])
local restored = redis.call('GET', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 0 or restored then
  local base = tonumber(restored or '0')
  if seen > base then
    redis.call('INCRBYFLOAT', KEYS[1], string.format('%.17g', seen - base))
    redis.call('SET', KEYS[2], ARGV[1])
  end
  if tonumber(ARGV[2]) > 0 then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
  end
end
return 1
"""

#: Write a whole evidence row (flat field/value ARGV) only if the row's hash does not exist.
SEED_ROW_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""


def flat_to_row(flat: Sequence[Any], models: Sequence[str]) -> tuple[dict[str, list[float]], int]:
    """A Redis row hash (flat ``[field, value, ...]``) as ``({model: [s, f]}, version)``."""
    fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
    row = {m: [float(fields.get(f"{m}|s", 0.0)), float(fields.get(f"{m}|f", 0.0))] for m in models}
    return row, int(float(fields.get("v", 0)))


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)



def row_fields(values: dict[str, Sequence[float]]) -> list[str]:
    """An evidence row ``{model: [s, f]}`` as the flat ``[field, value, ...]`` of its Redis hash."""
    return [x for m, (s, f) in values.items() for x in (f"{m}|s", repr(float(s)), f"{m}|f", repr(float(f)))]
