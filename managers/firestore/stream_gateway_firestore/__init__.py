"""stream-gateway-firestore: durable, resumable streams in Cloud Firestore.

```python
from stream_gateway_firestore import FirestoreStreamManager

manager = FirestoreStreamManager(project="my-project")
```

Importing this package imports Google's Firestore client; the core never does.
"""

from .durable_store import FirestoreDurableStore
from .manager import FirestoreStreamManager
from .storage import FirestoreStreamStorage

__all__ = ["FirestoreDurableStore", "FirestoreStreamManager", "FirestoreStreamStorage"]
