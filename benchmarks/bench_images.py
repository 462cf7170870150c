"""Images per second of CSM training for the MADE and PixelCNN AR-CSM backbones (issue 7), plus the MLE baselines.

One step = loss + backward (csm_edu.experiments.timing.time_per_step, median of --repeats), on random logit-space
images of each data set's shape, with the models sized by csm_edu.experiments.images.image_config(dataset, mode).
Optionally (--train-mnist) times a full training run of AR-CSM (MADE) on MNIST with the chosen mode's steps.

    python benchmarks/bench_images.py                                   # CPU, 1 thread, digits + MNIST, cpu_full sizes
    python benchmarks/bench_images.py --device cuda --mode gpu --datasets mnist cifar10 celeba
    python benchmarks/bench_images.py --device cuda --mode gpu --datasets mnist --train-mnist
"""
import argparse
import time

import torch

from csm_edu.experiments import images, timing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", default="cpu_full", choices=images.MODES)
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist"], choices=images.DATASETS)
    parser.add_argument("--batch", type=int, default=None, help="default: the configuration's batch size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-mnist", action="store_true", help="also time full AR-CSM (MADE) training on MNIST")
    args = parser.parse_args()
    device, header = timing.prepare(args.threads, args.device)
    print(f"{header} | mode {args.mode}\n")
    print("| data set | model | batch | ms / step | images / s |")
    print("|---|---|---:|---:|---:|")
    for dataset in args.datasets:
        cfg = images.image_config(dataset, args.mode)
        batch = args.batch or cfg["batch_size"]
        x = torch.randn(batch, cfg["dim"], generator=torch.Generator().manual_seed(0)).clamp(-2.9, 2.9).to(device)
        x_quantised = (torch.randint(0, cfg["levels"], (batch, cfg["dim"])) / (cfg["levels"] - 1)).to(device)
        for model_name in images.MODEL_NAMES:
            torch.manual_seed(0)
            model = images.build_model(model_name, cfg).to(device)
            is_score = "AR-CSM" in model_name
            loss_fn = images.csm_loss() if is_score else images.mle_loss
            data = x_quantised if model_name == "PixelCNN++" else x
            rate = images.images_per_second(model, loss_fn, data, repeats=args.repeats)
            print(f"| {dataset} | {model_name}{' (CSM)' if is_score else ' (MLE)'} | {batch} | {1000 * batch / rate:.1f} "
                  f"| {rate:.0f} |", flush=True)
    if args.train_mnist:
        cfg = images.image_config("mnist", args.mode)
        start = time.perf_counter()
        result = images.run_image_experiment("mnist", cfg, names=("AR-CSM (MADE)",), device=device, n=0)
        print(f"\nfull AR-CSM (MADE) MNIST run ({cfg['csm_steps']} steps, batch {cfg['batch_size']}): training "
              f"{result['seconds']['AR-CSM (MADE)']:.0f} s, with evaluation {time.perf_counter() - start:.0f} s, "
              f"test bits/dim {result['bits_per_dim']['AR-CSM (MADE)']:.3f}")


if __name__ == "__main__":
    main()
