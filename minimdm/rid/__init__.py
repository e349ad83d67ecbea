"""RID in miniature (arXiv 2412.09844): protecting an identity against few-shot personalisation of a diffusion model.

* ``data``: 8x8 digits in [-1, 1], one class held out as the identity (never in a base model's or defender's data);
* ``autoencoder``, ``ddpm``: a tiny latent DDPM and the same denoiser in pixel space;
* ``judge``: the classifier that scores generated images;
* ``personalize``: DreamBooth-style and textual-inversion-style attacks;
* ``defenses``: uniform noise, PGD (AdvDM), ASPL, and the RID defender trained with Adv-SDS;
* ``postprocess``: quantise + blur, DiffPure;
* ``metrics``, ``experiment``: identity success rate, Frechet distance, PSNR, L-infinity, time per image.
"""
