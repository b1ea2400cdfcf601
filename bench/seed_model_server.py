"""The seed's model container, rebuilt: a Flask app running DistilBERT in fp32 with torch's default threads.

As in the course lab: the model is loaded once at start, each POST runs it on
one text and answers the probabilities. Nothing limits torch's threads, so
every server uses every core (the oversubscription the seed had).
Run: ``python -m inferq.bench.seed_model_server MODEL_DIR PORT``.
"""
from __future__ import annotations

import sys

from flask import Flask, jsonify, request


def create_app(model_dir: str) -> Flask:
    """The model server of the seed: POST /run_model {"input": text} -> probabilities."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    app = Flask(__name__)

    @app.post("/run_model")
    def run_model():
        text = request.get_json()["input"]
        inputs = tokenizer(text, return_tensors="pt", truncation=True)
        with torch.no_grad():
            logits = model(**inputs).logits
        probabilities = torch.softmax(logits, dim=-1)[0].tolist()
        return jsonify(input_text=text, probabilities=probabilities)

    @app.get("/health")
    def health():
        return "ok"

    return app


def main() -> None:
    """Serve the model on 127.0.0.1:PORT with Flask's own server, as the seed's containers did."""
    model_dir, port = sys.argv[1], int(sys.argv[2])
    create_app(model_dir).run(host="127.0.0.1", port=port, threaded=True)


if __name__ == "__main__":
    main()
