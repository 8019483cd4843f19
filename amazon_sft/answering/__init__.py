"""Answer questions about products with sources: catalogue retrieval, ask/chat, export."""
