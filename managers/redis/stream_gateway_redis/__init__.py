"""stream-gateway-redis: durable, resumable streams in Redis.

```python
from stream_gateway_redis import RedisStreamManager

manager = RedisStreamManager("redis://localhost:6379/0")
```

Each stream is a hash (its record) and a Redis Stream (its chunk batches, at entry ids
derived from offsets), in one hash slot. Talks to Redis with redis-py's asyncio client;
the core never imports redis-py.
"""

from .manager import RedisStreamManager
from .storage import RedisStreamStorage

__all__ = ["RedisStreamManager", "RedisStreamStorage"]
