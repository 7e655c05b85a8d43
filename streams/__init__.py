"""The Faust app, topics, agents, the WebSocket bridge and the CLI: everything that touches Kafka."""
