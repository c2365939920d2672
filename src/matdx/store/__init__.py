"""The property store: mongoengine documents, the database backend, reads and writes."""
