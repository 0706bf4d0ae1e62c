"""stream-gateway-firestore: durable, resumable streams in Cloud Firestore.

```python
from stream_gateway_firestore import FirestoreStreamManager

manager = FirestoreStreamManager(project="my-project")
```

Importing this package imports Google's Firestore client; the core never does.
"""

from .manager import FirestoreStreamManager
from .storage import FirestoreStreamStorage

__all__ = ["FirestoreStreamManager", "FirestoreStreamStorage"]
