"""stream-gateway-postgres: durable, resumable streams and durable flows in PostgreSQL.

```python
from stream_gateway_postgres import PostgresDurableStore, PostgresStreamManager

manager = PostgresStreamManager("postgresql://app@db.internal/app")
store = PostgresDurableStore("postgresql://app@db.internal/app")
```

Runs on asyncio (asyncpg's event loop); the core never imports asyncpg.
"""

from .durable import PostgresDurableStore
from .manager import PostgresStreamManager
from .storage import PostgresStreamStorage

__all__ = ["PostgresDurableStore", "PostgresStreamManager", "PostgresStreamStorage"]
