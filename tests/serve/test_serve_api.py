"""`vrsjax serve` end to end on loopback with a tiny random checkpoint: the OpenAI request and response shapes,
images and video frames as data URLs, sampling parameters, usage counts, batching of concurrent requests, the
error JSON for bad requests (and serving on after them), and the teacher data tools run against it."""

import base64
import io
import socket
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

from vrsjax.cli import build_parser, main
from vrsjax.data import synthetic
from vrsjax.data.sft import read_sharegpt
from vrsjax.processing import Processor
from vrsjax.serve.engine import apply_stop, tokens_to_stop

TIMEOUT = 120.0


def _url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (56, 84, 3), dtype=np.uint8) for _ in range(count)]


def _post(served, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=TIMEOUT, **kwargs)


def _chat(served, content, **params) -> dict:
    body = {"model": served.model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **params}
    response = _post(served, body)
    assert response.status_code == 200, response.text
    return response.json()


def test_models_and_health(served):
    models = httpx.get(f"{served.url}/v1/models", timeout=TIMEOUT).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]
    assert httpx.get(f"{served.url}/health", timeout=TIMEOUT).json()["status"] == "ok"
    one = httpx.get(f"{served.url}/v1/models/tiny", timeout=TIMEOUT)
    assert one.status_code == 200 and one.json() == models["data"][0]
    other = httpx.get(f"{served.url}/v1/models/gpt-9", timeout=TIMEOUT)
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


def test_no_op_values_of_unsupported_fields_are_accepted(served):
    off = {"top_k": -1, "logprobs": False, "tools": [], "response_format": {"type": "text"}, "presence_penalty": 0.0}
    assert _chat(served, "x", seed=0, **off)["choices"]


def test_stop_string_counts_only_the_tokens_up_to_it(served):
    full = _chat(served, "describe the video", temperature=0.0, max_tokens=8)
    text = full["choices"][0]["message"]["content"]
    assert len(text) >= 2, text  # a random tiny model writes some text in 8 tokens
    cut = _chat(served, "describe the video", temperature=0.0, max_tokens=8, stop=[text[0]])
    assert cut["choices"][0]["message"]["content"] == "" and cut["choices"][0]["finish_reason"] == "stop"
    assert 1 <= cut["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]


def test_tokens_to_stop_is_the_first_prefix_that_holds_the_stop(served):
    processor = Processor.from_pretrained(served.log.parent / "tiny")
    ids = processor.tokenizer.encode("the red circle moves left, then the blue square stops. END of it")
    decode = lambda n: processor.decode(ids[:n])  # noqa: E731
    for stops in (["END"], ["blue", "circle"], ["."], ["stops. E"]):
        want = next(n for n in range(1, len(ids) + 1) if apply_stop(decode(n), stops)[1])
        assert tokens_to_stop(decode, len(ids), stops) == want, stops


def _raw_post(served, body: bytes, length: int, close_write: bool) -> bytes:
    """POST with a Content-Length larger than the body sent; the reply bytes."""
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        sock.sendall(head.encode() + body)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


@pytest.mark.parametrize("close_write", [True, False], ids=["client closed", "client stalled"])
def test_truncated_body_gets_408_and_one_log_line(served, close_write):
    before = served.log.read_text().count("answered 408")
    reply = _raw_post(served, b'{"messages": [', 100, close_write)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply
    log = served.log.read_text()
    assert log.count("answered 408") == before + 1 and "Traceback" not in log
    assert _chat(served, "still there?", seed=0)["choices"]


def test_busy_port_is_one_line_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:  # the port is bound before the checkpoint is read
            main(["serve", "--checkpoint", str(tmp_path / "none"), "--port", str(port)])
    message = str(exit_info.value.code)
    assert (
        message.startswith(f"vrsjax serve: --port {port}: 127.0.0.1:{port} is already in use") and "\n" not in message
    )


def test_chat_reply_usage_and_seed(served):
    reply = _chat(served, "find the red circle", n=2, seed=7, temperature=1.0)
    assert reply["object"] == "chat.completion" and reply["model"] == "tiny" and len(reply["choices"]) == 2
    for i, choice in enumerate(reply["choices"]):
        assert choice["index"] == i and choice["message"]["role"] == "assistant"
        assert choice["finish_reason"] in ("stop", "length")
    usage = reply["usage"]
    assert 2 <= usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    again = _chat(served, "find the red circle", n=2, seed=7, temperature=1.0)
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in reply["choices"]]


def test_images_and_video_frames_count_as_the_processor_does(served):
    frames = _frames(3)
    content = [
        {"type": "text", "text": "(0s)"},
        {"type": "image_url", "image_url": {"url": _url(frames[0])}},
        {"type": "video", "video": [_url(f) for f in frames[1:]], "fps": 1.0},
        {"type": "text", "text": "where is it?"},
    ]
    reply = _chat(served, content, seed=1)
    processor = Processor.from_pretrained(served.log.parent / "tiny")
    messages = [{"role": "user", "content": [{"type": "text", "text": "(0s)"}, {"type": "image"}, {"type": "video"}]}]
    messages[0]["content"].append({"type": "text", "text": "where is it?"})
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    batch = processor(text=[prompt], images=[frames[0]], videos=[np.stack(frames[1:])], fps=[1.0])
    assert reply["usage"]["prompt_tokens"] == int(batch["attention_mask"].sum())


def test_greedy_stop_string_and_max_tokens(served):
    text = _chat(served, "describe the video", temperature=0.0, max_tokens=8)["choices"][0]["message"]["content"]
    again = _chat(served, "describe the video", temperature=0.0, max_tokens=8)["choices"][0]["message"]["content"]
    assert text == again
    if len(text) >= 4:
        stop = text[2:4]
        cut = _chat(served, "describe the video", temperature=0.0, max_tokens=8, stop=[stop])["choices"][0]
        assert cut["message"]["content"] == text[: text.find(stop)] and cut["finish_reason"] == "stop"
    short = _chat(served, "describe the video", temperature=0.0, max_tokens=2)
    assert short["usage"]["completion_tokens"] <= 2


BAD = [
    ("not json", b"{messages", 400, "invalid_json"),
    ("not an object", b"[1, 2]", 400, "invalid_json"),
    ("no messages", {"model": "tiny"}, 422, "invalid_type"),
    ("bad role", {"messages": [{"role": "robot", "content": "x"}]}, 422, "invalid_value"),
    ("bad part", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, 422, "invalid_value"),
    (
        "remote url",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
        422,
        "invalid_image_url",
    ),
    (
        "broken image",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}],
                }
            ]
        },
        422,
        "invalid_image",
    ),
    ("temperature", {"messages": [{"role": "user", "content": "x"}], "temperature": -1}, 422, "invalid_value"),
    ("n", {"messages": [{"role": "user", "content": "x"}], "n": "2"}, 422, "invalid_type"),
    ("stream", {"messages": [{"role": "user", "content": "x"}], "stream": True}, 422, "unsupported"),
    ("model", {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, 404, "model_not_found"),
    ("top_k", {"messages": [{"role": "user", "content": "x"}], "top_k": 5}, 422, "unsupported"),
    ("logprobs", {"messages": [{"role": "user", "content": "x"}], "logprobs": True}, 422, "unsupported"),
    ("tools", {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, 422, "unsupported"),
    (
        "response_format",
        {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
        422,
        "unsupported",
    ),
    ("too long", {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4096}, 400, "context_length_exceeded"),
]


@pytest.mark.parametrize("name,body,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors(served, name, body, status, code):
    if isinstance(body, bytes):
        response = httpx.post(f"{served.url}/v1/chat/completions", content=body, timeout=TIMEOUT)
    else:
        response = _post(served, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]


def test_oversized_request_is_refused_and_serving_goes_on(served):
    huge = "x" * int(0.6 * 2**20)
    response = _post(served, {"messages": [{"role": "user", "content": huge}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert httpx.get(f"{served.url}/v1/nope", timeout=TIMEOUT).json()["error"]["code"] == "not_found"
    assert _chat(served, "still there?", seed=0)["choices"]


@pytest.mark.slow
def test_concurrent_requests_share_generate_calls(served):
    barrier, results = threading.Barrier(6), [None] * 6

    def client(i):
        barrier.wait()
        results[i] = _post(served, {"messages": [{"role": "user", "content": f"query {i}"}], "max_tokens": 8})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert all(r is not None and r.status_code == 200 for r in results)
    assert httpx.get(f"{served.url}/health", timeout=TIMEOUT).json()["largest_batch"] > 1


def run_teacher(run, argv: list[str], out) -> dict:
    """The report of a teacher command; a run that kept nothing (a random model's replies are rarely valid) is a
    one-line UserError, writes no data file and leaves its counts in OUT.report.json."""
    import json

    from vrsjax.errors import UserError

    try:
        return run(build_parser().parse_args(argv))
    except UserError as err:
        assert "no sample kept" in str(err) and not out.exists()
        return json.loads(out.with_name(out.name + ".report.json").read_text())


@pytest.mark.slow
def test_teacher_tools_count_invalid_replies_of_a_random_model(served, tmp_path):
    from vrsjax.teacher.commands import run_cot, run_difficulty

    dataset = synthetic.write_dataset(tmp_path / "revos", num_videos=2, seed=5, num_frames=(8, 8))
    common = ["--dataset", str(dataset.root), "--endpoint", served.url + "/v1", "--model", "tiny", "--size", "2"]
    common += ["--max-attempts", "2", "--max-tokens", "8", "--frame-fit", "112x84", "--num-frames", "4"]
    cot_out = tmp_path / "cot.json"
    report = run_teacher(run_cot, ["data", "cot", "--out", str(cot_out), *common], cot_out)
    counts = report["counts"]
    assert counts["selected"] == 2 and counts["kept"] + counts["dropped_invalid"] == 2
    assert report["usage"]["requests"] == counts["selected"] + counts["reasks"]
    assert sum(counts["invalid_reasons"].values()) == 2 * counts["dropped_invalid"]
    assert (len(read_sharegpt(cot_out)[0]) if counts["kept"] else cot_out.exists()) == counts["kept"]
    d_out = tmp_path / "difficulty.jsonl"
    report = run_teacher(run_difficulty, ["data", "difficulty", "--out", str(d_out), *common], d_out)
    assert report["counts"]["selected"] == 2 and report["usage"]["failures"] == 0
    assert report["counts"]["kept"] + report["counts"]["dropped_invalid"] == 2
