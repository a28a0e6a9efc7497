"""The `EmbeddingService` facade, its call in one vector space, its answers and similarity search."""
