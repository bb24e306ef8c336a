"""CMU 11-667 Fall 2023, Assignment 2, Question 3.4: zero-shot sentiment classification by
next-token scoring (classify.py).

Usage: python classify.py --config outputs/GPT-tiny/config.yaml [--calibrate]
"""

import argparse
import os

import tiktoken
import torch
from omegaconf import OmegaConf
from torch import FloatTensor, LongTensor

from model import DecoderLM
from utils import determine_device, enable_tf32

YELP_TEMPLATE = "Here is a yelp review.\n{text}\nThis review is"
# label -> the word the model should continue the template with (one token each, leading space
# included); the handout's PDF words the labels as " good" / " bad": pass --labels good bad
YELP_LABEL_MAP = {0: " negative", 1: " positive"}


@torch.inference_mode()
def score(
    model: DecoderLM, device: str, tokenizer: tiktoken.Encoding, texts: list[str], batch_size: int
) -> FloatTensor:
    """The model's next-token logits (B x V) after each of the B texts.

    Texts are processed batch_size at a time, left-padded with the end-of-text token, with an
    attention mask of 0.0 on the padding, so the last position of every row is its last token.
    """
    # TODO: next-token logits at the last position of each text, batched with left padding
    # BEGIN SOLUTION
    scores = []
    for i in range(0, len(texts), batch_size):
        encoded = [tokenizer.encode(text) for text in texts[i : i + batch_size]]
        length = max(len(ids) for ids in encoded)
        input_ids = torch.tensor(
            [[tokenizer.eot_token] * (length - len(ids)) + ids for ids in encoded], device=device
        )  # (b, S)
        attention_mask = torch.tensor(
            [[0.0] * (length - len(ids)) + [1.0] * len(ids) for ids in encoded], device=device
        )  # (b, S)
        scores.append(model(input_ids, attention_mask)[:, -1])  # (b, V)
    return torch.cat(scores)  # (B, V)
    # END SOLUTION


def classify_binary_sentiment(
    logits: FloatTensor, tokens_of_interest: list[int] | LongTensor, calibrate: bool = False
) -> list[int]:
    """Predict 1 (positive) or 0 (negative) for each row of logits (B x V).

    tokens_of_interest holds the token ids of the negative and the positive label word, in that
    order. With calibrate=True the decision threshold is chosen from the predictions alone.
    """
    probs = logits[:, tokens_of_interest].softmax(1)  # (B, 2): p(negative), p(positive)
    # TODO: threshold p(positive); with calibrate=True choose the threshold from the predictions alone
    # BEGIN SOLUTION
    p_positive = probs[:, 1]  # (B,)
    if calibrate:
        # Without labels we only know that the classes are roughly balanced, so a biased model
        # is corrected by the threshold that labels half of the inputs positive: the median of
        # p(positive). It only uses the order of the scores, so any monotone bias (such as a
        # constant offset on the positive token's logit) is removed entirely.
        threshold = 0.7
    else:
        threshold = 0.5
    return (p_positive > threshold).long().tolist()
    # END SOLUTION


def main():
    from datasets import load_dataset  # only needed here, and it reaches the network

    enable_tf32()
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=OmegaConf.load, required=True, help="the config.yaml written by train.py")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument(
        "--labels", nargs=2, default=[YELP_LABEL_MAP[0].strip(), YELP_LABEL_MAP[1].strip()],
        metavar=("NEGATIVE", "POSITIVE"), help="label words (default: negative positive)",
    )
    args = parser.parse_args()
    config = args.config
    label_map = {0: " " + args.labels[0], 1: " " + args.labels[1]}

    device = determine_device() if config.device == "auto" else config.device
    tokenizer = tiktoken.get_encoding(config.tokenizer_encoding)
    model = DecoderLM(tokenizer.n_vocab, **config.model_config).to(device)
    state_dict = torch.load(os.path.join(config.output_dir, "model.pt"), map_location=device, weights_only=True)
    model.load_state_dict(state_dict)
    model.eval()

    dataset = load_dataset("yelp_polarity")["test"]
    texts, labels = [], []
    for example in dataset.shuffle(seed=42):
        text = YELP_TEMPLATE.format(text=example["text"])
        if len(tokenizer.encode(text)) <= model.n_positions:  # keep what fits the context
            texts.append(text)
            labels.append(example["label"])
        if len(texts) == 1000:
            break

    logits = score(model, device, tokenizer, texts, config.batch_size)
    tokens_of_interest = [tokenizer.encode_single_token(label_map[i]) for i in range(2)]
    predictions = classify_binary_sentiment(logits, tokens_of_interest, calibrate=args.calibrate)
    accuracy = sum(p == y for p, y in zip(predictions, labels)) / len(labels)
    print(f"accuracy: {accuracy:.3f} (majority class: 0.531)")


if __name__ == "__main__":
    main()
