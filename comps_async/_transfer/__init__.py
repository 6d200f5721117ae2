"""Moving bytes: hashing, batched multipart saves, chunked uploads."""
