"""stream-gateway-rtdb: durable, resumable streams in the Firebase Realtime Database.

```python
from stream_gateway_rtdb import RtdbStreamManager

manager = RtdbStreamManager("https://my-project-default-rtdb.firebaseio.com")
```

Talks to the database's REST API and its event streams with httpx; firebase-admin
supplies the app and its credentials. Importing this package imports firebase-admin
lazily (only to read an app's credential); the core never imports either.
"""

from .manager import RtdbStreamManager
from .storage import RtdbStreamStorage

__all__ = ["RtdbStreamManager", "RtdbStreamStorage"]
