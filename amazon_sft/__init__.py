"""amazon_sft: fine-tune Llama/Mistral-class causal LMs on AmazonTitles-1.3MM and answer with sources."""

__version__ = "0.1.0"
