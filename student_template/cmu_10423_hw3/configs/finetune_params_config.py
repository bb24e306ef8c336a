# LoRA fine-tuning of GPT-2 on Rotten Tomatoes (HW3 defaults). Every name below can be
# overridden on the command line: python train.py --rank=8 --alpha=32 --out_dir=gpt-lora-r8

# I/O
out_dir = "gpt-lora-default"
init_from = "gpt2"  # 'gpt2', 'gpt2-medium', ..., a local Hugging Face GPT-2 folder, 'resume' or 'scratch'
eval_interval = 5
eval_iters = 20
always_save_checkpoint = False

# wandb logging
wandb_log = False
wandb_project = "hw3-lora-finetune"
wandb_run_name = "gpt-lora"

# data
dataset = "rotten_tomatoes"  # a Hugging Face dataset name, or a folder of {train,validation,test}.jsonl
tokenizer = "gpt2"  # a Hugging Face tokenizer name, or a tokenizer.json file
batch_size = 8
gradient_accumulation_steps = 4

# LoRA (the handout's default: r=128, alpha=512, i.e. scaling alpha/r = 4); rank=0 fine-tunes everything
rank = 128
alpha = 512.0
lora_dropout = 0.05

# model (used by init_from='scratch'; pretrained checkpoints bring their own shape)
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50257
dropout = 0.0

# AdamW
lr = 5e-4
max_iters = 20
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

# learning-rate schedule: linear warmup, then cosine decay to min_lr
decay_lr = False
warmup_iters = 2
min_lr = 5e-5

# system
device = "cuda"
dtype = "bfloat16"  # 'float32', 'bfloat16' or 'float16'
seed = 1337
