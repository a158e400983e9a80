"""Everything about the broker: the embedded broker, topics and epochs, the wire envelope, client
options, Faust tuning and consumer lag. The rest of the service talks to Kafka through this.
"""
