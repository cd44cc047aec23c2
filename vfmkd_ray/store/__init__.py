"""The Parquet feature store: schema, codecs, atomic part writer, reader and manifest."""
