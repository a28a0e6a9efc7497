import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from providers import ResponseTooLargeError
from server.tools.encoding import (
    MAX_MESSAGE_BYTES,
    check_message_size,
    encode_vectors,
    encoded_vector_bytes,
    max_vectors_per_message,
    short_decimals,
)


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("dimensions", [384, 1536, 3072])
def test_the_size_bound_holds_for_the_longest_printed_floats(encoding: str, dimensions: int) -> None:
    # Small negative values with full precision print longest: -1.2345678...e-05
    rng = np.random.default_rng(0)
    vectors = (-(10.0 ** rng.uniform(-9, -5, size=(4, dimensions)))).astype(np.float32)
    encoded = encode_vectors(vectors, encoding)  # type: ignore[arg-type]
    for vector in encoded:
        assert len(json.dumps(vector)) + 2 <= encoded_vector_bytes(dimensions, encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_the_largest_allowed_answer_fits_in_one_message(encoding: str) -> None:
    count = max_vectors_per_message(1536, encoding)  # type: ignore[arg-type]
    vectors = np.full((count, 1536), -1.2345678e-05, dtype=np.float32)
    body = json.dumps({"embeddings": encode_vectors(vectors, encoding)})  # type: ignore[arg-type]
    assert len(body) < MAX_MESSAGE_BYTES
    check_message_size(count, 1536, encoding)  # type: ignore[arg-type]
    with pytest.raises(ResponseTooLargeError, match=f"Send at most {count} texts per call"):
        check_message_size(count + 1, 1536, encoding)  # type: ignore[arg-type]


def test_base64_is_little_endian_float32() -> None:
    vectors = np.array([[1.0, -2.5, 0.125]], dtype=np.float32)
    (encoded,) = encode_vectors(vectors, "base64")
    assert base64.b64decode(encoded) == b"\x00\x00\x80\x3f" + b"\x00\x00\x20\xc0" + b"\x00\x00\x00\x3e"


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.integers(1, 64)),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False),
    )
)
def test_floats_travel_as_their_short_decimals_and_read_back_exactly(vectors: np.ndarray) -> None:
    short = short_decimals(vectors)
    assert short.astype(np.float32).tobytes() == vectors.tobytes()  # bit for bit, -0.0 included
    assert len(json.dumps(short.tolist())) <= len(json.dumps(vectors.astype(np.float64).tolist()))


def test_float_encoding_prints_nine_digits_at_most_not_seventeen() -> None:
    vectors = np.array([[0.1, -0.0067094308, 1 / 3, 0.0, 1e-15, 6.5791164e16, 8.70414e30]], dtype=np.float32)
    assert (
        json.dumps(encode_vectors(vectors, "float"))
        == "[[0.1, -0.0067094308, 0.33333334, 0.0, 1e-15, 6.5791164e+16, 8.70414017e+30]]"
    )
