"""Ask the ragstream WebSocket bridge a question and print the answer as it streams, resuming after a reconnect."""

import argparse
import asyncio
import json
import sys
from typing import Any

from websockets.asyncio.client import connect


async def ask(url: str, api_key: str, question: str, options: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {api_key}"}
    request_id, last_seq = None, -1
    for _attempt in range(10):
        try:
            async with connect(url, additional_headers=headers) as ws:
                first: dict[str, Any] = {"type": "ask", "id": "q1", "question": question, "options": options}
                if request_id is not None:  # reconnected (the bridge restarted): get what we missed, then the rest
                    first = {"type": "resume", "id": request_id, "after_seq": last_seq}
                await ws.send(json.dumps(first))
                async for frame in ws:
                    message = json.loads(frame)
                    if message["type"] == "accepted":
                        request_id = message["request_id"]
                    elif message["type"] == "token" and message["seq"] > last_seq:
                        last_seq = message["seq"]
                        print(message["text"], end="", flush=True)
                    elif message["type"] == "citation":
                        print(f"\n[{message['number']}] {message['title']} <{message['source_uri']}>", end="")
                    elif message["type"] in ("done", "error"):
                        print()
                        return dict(message)
        except OSError:  # the bridge is not up (yet): try again
            pass
        await asyncio.sleep(1.0)
    raise ConnectionError(f"no answer from {url}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("question")
    parser.add_argument("--url", default="ws://127.0.0.1:8765")
    parser.add_argument("--api-key", default="dev-key")
    parser.add_argument("--model", default=None, help="Triton model, e.g. llm_echo; default: the router decides")
    args = parser.parse_args()
    options = {"model": args.model} if args.model else {}
    final = asyncio.run(ask(args.url, args.api_key, args.question, options))
    print(json.dumps(final), file=sys.stderr)
    sys.exit(0 if final["type"] == "done" else 1)
