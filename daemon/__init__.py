"""kpd: a Kafka producer daemon for one host."""
