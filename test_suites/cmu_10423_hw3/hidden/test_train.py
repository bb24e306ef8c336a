"""train.py: a pretrained model fine-tuned with LoRA trains only A and B."""

import os


def config_for(sub, path, tmp_path, rank):
    train = sub.train
    argv = [train.DEFAULT_CONFIG, f"--init_from={path}", f"--rank={rank}", "--alpha=8",
            "--lora_dropout=0.0", "--block_size=32", f"--out_dir={os.fspath(tmp_path / 'out')}"]
    return train.load_config(argv)


def test_pretrained_lora_trains_only_A_and_B(sub, hf_checkpoint, tmp_path):
    path, _ = hf_checkpoint
    model, model_args = sub.train.init_model(config_for(sub, path, tmp_path, rank=4))
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    lora = sorted(n for n, _ in model.named_parameters() if n.endswith(("lora_A", "lora_B")))
    assert lora, "with rank > 0 the model must have LoRA layers"
    assert trainable == lora, "with rank > 0 only lora_A and lora_B may train (call mark_only_lora_as_trainable)"
    assert model_args["lora_rank"] == 4


def test_full_finetuning_without_lora(sub, hf_checkpoint, tmp_path):
    path, _ = hf_checkpoint
    model, _ = sub.train.init_model(config_for(sub, path, tmp_path, rank=0))
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert not frozen, f"with rank=0 (fine-tuning without LoRA) every parameter trains; frozen: {frozen[:3]}"
