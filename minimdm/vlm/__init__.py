"""LLaDA-V in miniature (arXiv 2505.16933): visual instruction tuning of a masked-diffusion LM on 8x8 digits.

* ``encoder``   a small CNN over the digits (SigLIP's role), pretrained as a classifier, then frozen;
* ``dialogues`` templated visual dialogues with exact answers, the tokenizer, the stratified split;
* ``model``     connector, splice of image features at the placeholder, the attention switch;
* ``loss``      LLaDA-V's multi-turn answer-only masked loss, and the AR control's next-token loss;
* ``sampling``  answers turn by turn with the course's sampler (or greedy AR decoding), exact-match scores;
* ``stages``    the training recipe: text pretraining, connector alignment, full tuning.
"""
