"""The HTTP API's bodies (pydantic models, so /docs shows them) and the one-line reasons for bad requests.

``POST /predict`` takes ``{"inputs": "text" | ["t1", ...] | [["a", "b"], ...], "policy"?, "threshold"?,
"continue_threshold"?, "return_probabilities"?}`` and answers ``{"predictions": [{"label", "score", "exit_layer",
"probabilities"?}], "model", "policy", "threshold", "continue_threshold"}`` in input order (a multi-label model answers
``labels``, a regression model its ``score``: :class:`Prediction`). Every error answers
``{"detail": "one line"}``.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from geep.tokens import unicode_problem

Inputs = Union[str, list[str], list[tuple[str, str]]]
UNREADABLE_BODY = "the body is not UTF-8 text: send JSON encoded as UTF-8"


class PredictRequest(BaseModel):
    """A /predict body. Types are checked strictly: a number is not a text, a string is not a threshold."""

    model_config = ConfigDict(extra="forbid")

    inputs: Inputs = Field(description='a text, a list of texts, or a list of [text, text pair] pairs',
                           examples=["The match ended in a draw.", ["first text", "second text"]])
    policy: Union[str, None] = Field(None, description="an exit policy (default: the server's)")
    threshold: Union[float, None] = Field(None, description="the policy's knob (default: the server's, or the "
                                                            "model's calibrated one for another policy)")
    continue_threshold: Union[float, None] = Field(
        None, description="geep-verify's continuation threshold t, the fastbert rule rows continue under after "
                          "their predicted layer (default: the server's, or the model's calibrated one)")
    return_probabilities: bool = Field(False, description="also return every label's probability")

    @field_validator("inputs", mode="before")
    @classmethod
    def _inputs(cls, value: Any) -> Any:
        """Texts are strings of valid Unicode. An empty or whitespace-only text is answered like any other, as
        ``geep.predict`` and ``geep predict`` answer it (README, "Empty texts")."""
        if isinstance(value, str):
            _check_text(value, "the text")
            return value
        if not isinstance(value, list):
            raise ValueError("must be a text, a list of texts or a list of [text, text pair] pairs")
        if not value:
            raise ValueError("no texts: the list is empty")
        pairs = isinstance(value[0], list)
        for i, item in enumerate(value):
            if pairs:
                if not (isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)):
                    raise ValueError(f"item {i} is not a [text, text pair] pair of two strings (pairs and single "
                                     "texts cannot be mixed)")
                _check_text(item[0], f"text {i}")
                _check_text(item[1], f"text pair {i}")
            else:
                if not isinstance(item, str):
                    raise ValueError(f"item {i} is not a string (pairs and single texts cannot be mixed)")
                _check_text(item, f"text {i}")
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("must be a policy name (leave `policy` out for the server's)")
        return value

    @field_validator("threshold", "continue_threshold", mode="before")
    @classmethod
    def _threshold(cls, value: Any) -> Any:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError("must be a number")
        return value

    @field_validator("return_probabilities", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    def texts(self) -> tuple[list[str], list[str] | None]:
        """(texts, text pairs or None), in input order."""
        if isinstance(self.inputs, str):
            return [self.inputs], None
        if self.inputs and isinstance(self.inputs[0], (tuple, list)):
            return [a for a, _ in self.inputs], [b for _, b in self.inputs]
        return list(self.inputs), None


def _check_text(text: str, which: str) -> None:
    problem = unicode_problem(text)
    if problem is not None:
        raise ValueError(f"{which} is not valid Unicode text: {problem}")


class Prediction(BaseModel):
    """One row's answer, by the model's task: classification ``label`` and its probability as ``score``;
    multi-label ``labels`` (the set) and the lowest probability among them as ``score``; regression the predicted
    ``score`` alone."""

    label: Union[str, None] = Field(None, description="classification: the predicted label")
    labels: Union[list[str], None] = Field(None, description="multi-label: the predicted label set")
    score: Union[float, None] = Field(None, description="the label's probability (multi-label: the set's lowest; "
                                                  "regression: the predicted score; none for token classification)")
    tokens: Union[list[str], None] = Field(None, description="token classification: the text's words (split on "
                                                           "whitespace)")
    tags: Union[list[str], None] = Field(None, description="token classification: each word's tag")
    entities: Union[list[dict[str, Any]], None] = Field(None, description="token classification: the entity "
                                                        "spans the tags decode to (type, start, end, text)")
    exit_layers: Union[list[int], None] = Field(None, description="token classification: each word's exit layer")
    exit_layer: int = Field(description="the layer the row left at (1..L)")
    exit_member: Union[int, None] = Field(None, description="a cascade's: the member (1..M) the row left in; "
                                                       "exit_layer then counts the earlier members' layers too")
    probabilities: Union[dict[str, float], None] = None


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    model: str
    policy: str
    threshold: Union[float, None] = Field(description="the knob the policy ran at (geep-verify: tau)")
    continue_threshold: Union[float, None] = Field(None, description="geep-verify's continuation threshold t it "
                                                                     "ran at (null for the other policies)")


class ErrorResponse(BaseModel):
    detail: str = Field(description="one line: what was wrong")


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One line for pydantic's errors: the first error's field and reason (malformed JSON said as such)."""
    if not errors:
        return "invalid request"
    error = errors[0]
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return f"malformed JSON{': ' + str(reason) if reason else ''}"
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "missing" and not loc:
        msg = "the body must be a JSON object with `inputs`"
    if error.get("type") in ("model_attributes_type", "dict_type") and not loc:
        msg = "the body must be a JSON object with `inputs`"
    return f"{loc[0]}: {msg}" if loc else msg
