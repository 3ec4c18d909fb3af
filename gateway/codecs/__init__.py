"""Protocol codecs: a request body to the guards' columns, and an ``Outcome`` to the answer.

One codec per prediction protocol, each a module of this package with one object that
``decode``s a body (with its headers, for the model it is addressed to) and ``encode``s the
outcome the dispatcher (``gateway.dispatch``) returns:

- ``v1``: the V1 records protocol (``{"instances": [{feature: value}, ...]}``);
- ``v2``: the Open Inference Protocol, JSON tensors or the binary tensor data extension
  (a JSON header followed by raw tensor bytes, told apart per request by the
  ``Inference-Header-Content-Length`` header, with binary outputs chosen per output).

Codecs know the wire format and nothing of scheduling, admission or counting; they raise
``GatewayError``s (``PayloadError`` 400, ``PayloadTooLargeError`` 413) for bodies they
cannot read. The route table (``gateway.http.routes``) names each hot endpoint's codec.
"""

from __future__ import annotations

from gateway.codecs.base import Answer, Codec, Decoded, Headers, header
from gateway.codecs.v1 import V1
from gateway.codecs.v2 import V2

__all__ = ["V1", "V2", "Answer", "Codec", "Decoded", "Headers", "header"]
