"""The WebSocket bridge process: clients ask over a WebSocket, the question travels as Kafka events.

``protocol`` is the documented message contract; ``server`` the process (``server.run_bridge``).
"""
