"""Judge sampling: a configured judge model scores a random fraction of the gateway's answers after
they have been returned, and its score reaches the policy as ``judge`` feedback.

Each answered call is sent to the judge with probability ``gateway.judge.sample_rate``, drawn
independently of everything else and logged with the call (``calls.judge_rate``), so an estimate
that uses judged answers only can weight them by the inverse of that probability. The judge grades
one answer on a 1-10 scale in the single-answer grading format of MT-Bench (Zheng et al., 2023,
"Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena", appendix: the rating is written as
``[[N]]``). Judge calls run in the background with a bounded queue and concurrency, never delaying an
answer (a full queue, or the judge's provider cooling down, drops the judgement: counted in
``banditroute_judge_dropped_total``); their cost is counted apart (``banditroute_judge_cost_usd_total`` and ``calls`` rows of kind
``judge``), not as the judged decision's cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re

from banditroute.config import JudgeConfig
from banditroute.core.reward import Feedback, Signal
from banditroute.gateway.requests import ChatRequest

log = logging.getLogger("banditroute")

INSTRUCTIONS = (
    "You are an impartial judge. Rate how well the assistant's answer below serves the user's request: "
    "correctness first, then helpfulness, relevance and completeness. Reply with a one-sentence reason "
    "followed by the rating from 1 (useless or wrong) to 10 (excellent) in exactly this format: [[7]]"
)
PICK_INSTRUCTIONS = (
    "You are an impartial judge. Several assistants answered the user's request below. Pick the answer that "
    "serves the request best: correctness first, then helpfulness, relevance and completeness; ignore the "
    "order and the length of the answers. Reply with a one-sentence reason followed by the number of the best "
    "answer in exactly this format: [[2]]"
)
RATING = re.compile(r"\[\[\s*(10|[1-9])(?:\.\d+)?\s*\]\]")
MAX_CHARS = 12_000  # of question and answer each sent to the judge


def parse_rating(text: str) -> int | None:
    """The last ``[[N]]`` rating in a judge's reply, or None."""
    found = RATING.findall(text or "")
    return int(found[-1]) if found else None


class Judge:
    """Samples answers and has them judged in the background (see the module's docstring)."""

    def __init__(self, gateway, config: JudgeConfig, rng: random.Random | None = None):
        self.gateway = gateway
        self.config = config
        self.rng = rng or random.Random()
        self._slots = asyncio.Semaphore(config.max_concurrent)
        self.queued = 0

    @property
    def rate(self) -> float:
        return self.config.sample_rate if self.config.model is not None else 0.0

    def sample(self) -> bool:
        """Whether the answer just returned goes to the judge (probability :attr:`rate`)."""
        return self.rate > 0.0 and self.rng.random() < self.rate

    def submit(self, decision_id: str, question: str, answer: str) -> None:
        """Judge this answer in the background, unless the judge's queue is full, its provider's circuit is
        open or it is at its rate limit (then the judgement is dropped and counted)."""
        size = self.gateway.own_tokens(self.config.model, self.gateway.service.router.featurizer.input_tokens(
            question + answer))  # as the judge model counts it
        if self.queued >= self.config.max_queued or self.gateway.unavailable(self.config.model, size) is not None:
            self.gateway.metrics.judge_dropped.inc()
            return
        self.queued += 1
        self.gateway.background(self._judge(decision_id, question, answer, size))

    async def _judge(self, decision_id: str, question: str, answer: str, size: float) -> None:
        try:
            async with self._slots:
                # checked again once a slot is free: the judgements queued before this one may have used the
                # room it saw; nothing waits between this check and the call taking its share of the limit
                if self.gateway.unavailable(self.config.model, size) is not None:
                    self.gateway.metrics.judge_dropped.inc()
                    return
                await self._grade(decision_id, question, answer)
        finally:
            self.queued -= 1

    async def _grade(self, decision_id: str, question: str, answer: str) -> None:
        rating, _ = await ask_judge(self.gateway, self.config.model, decision_id, grading_messages(question, answer))
        if rating is None:
            return
        fb = Feedback(signals=[Signal(source="judge", kind="score", value=float(rating), scale="1-10")],
                      idempotency_key="banditroute-judge")
        try:
            await self.gateway.service.feedback(decision_id, fb)
        except Exception as err:  # noqa: BLE001 - a lost judgement is logged, never raised into the loop
            log.warning("judge feedback for %s not recorded: %s", decision_id, err)


def grading_messages(question: str, answer: str) -> list[dict]:
    """The judge's prompt for rating one answer (MT-Bench's single-answer grading)."""
    return [{"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": f"[User request]\n{question[:MAX_CHARS]}\n\n"
                                        f"[Assistant's answer]\n{answer[:MAX_CHARS]}"}]


def picking_messages(question: str, answers: list[str]) -> list[dict]:
    """The judge's prompt for picking the best of several answers (MT-Bench's pairwise format, widened
    to N answers: the verdict is the number of the best one, ``[[N]]``)."""
    shown = "\n\n".join(f"[Answer {i}]\n{a[:MAX_CHARS // len(answers)]}" for i, a in enumerate(answers, 1))
    return [{"role": "system", "content": PICK_INSTRUCTIONS},
            {"role": "user", "content": f"[User request]\n{question[:MAX_CHARS]}\n\n{shown}"}]


async def ask_judge(gw, model: str, decision_id: str, messages: list[dict]) -> tuple[int | None, float]:
    """Send ``messages`` to the judge ``model`` (a ``calls`` row of kind ``judge`` for ``decision_id``,
    its cost counted apart); the ``[[N]]`` in its reply, or None, and what the call cost."""
    def body_for(p) -> dict:
        return {"model": p.upstream_name, "temperature": 0, "max_tokens": 200, "messages": messages}

    reply, call, errors = await gw.complete_any(model, decision_id, "judge", 1, body_for, cancelled="cancelled")
    if reply is None:
        log.info("judge call for %s failed: %s", decision_id, "; ".join(errors))
        return None, 0.0
    usage = reply.body.get("usage")
    tokens_in, tokens_out, cached = ChatRequest.usage_tokens(usage)
    text = ChatRequest.answer_text(reply.body)
    row = gw.end_call(call, "ok", 200, None, reply.ttft_ms, tokens_in, tokens_out,
                      cached_input_tokens=cached)
    cost = row["cost_usd"] or 0.0
    if cost:
        gw.metrics.judge_cost.inc(amount=cost)
    rating = parse_rating(text)
    if rating is None:
        log.info("judge gave no [[N]] for %s: %r", decision_id, text[:200])
    return rating, cost
