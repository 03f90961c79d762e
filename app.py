"""Hugging Face Space entry point: the same web app as ``rsfiqa serve`` (see ``modeling_rsfiqa/app.py``).

A Gradio Space runs ``python app.py``; it sets ``GRADIO_SERVER_NAME=0.0.0.0``. Run locally, this binds to
127.0.0.1:7860 (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` change that). The models are loaded once,
when this module is imported, and ``demo`` is the Gradio app (queue configured).
"""

from __future__ import annotations

import os

from modeling_rsfiqa.app import build_app, launch_app, load_pipelines

pipelines = load_pipelines()
demo = build_app(pipelines)

if __name__ == "__main__":
    launch_app(
        demo,
        host=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
