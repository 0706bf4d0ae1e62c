"""stream-gateway-postgres: durable, resumable streams in PostgreSQL.

```python
from stream_gateway_postgres import PostgresStreamManager

manager = PostgresStreamManager("postgresql://app@db.internal/app")
```

Runs on asyncio (asyncpg's event loop); the core never imports asyncpg.
"""

from .manager import PostgresStreamManager
from .storage import PostgresStreamStorage

__all__ = ["PostgresStreamManager", "PostgresStreamStorage"]
