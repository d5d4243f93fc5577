"""The tutorial's train.py as a whole command, written as the tutorial wrote it, for bench_whole_commands.py.

Its structure is kept: a DatasetLoader that builds its transforms for every photo, torchvision's ResNet50 with
fc → 2 outputs, device cuda → mps → cpu, Adam at 1e-4, batch 8, cross-entropy, train() and test() with their
per-step print and swanlab.log calls, test() every 4 epochs (so 1 or 3 epochs never test), the state dict
saved at the end. Each difference needed to run here is marked "bench:". No speed-up of this project's is used.
"""

import argparse
import csv
import os

import swanlab
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms


class DatasetLoader(torch.utils.data.Dataset):
    def __init__(self, csv_path, data_dir):
        self.csv_file = csv_path
        with open(self.csv_file) as file:
            self.data = list(csv.reader(file))

        self.current_dir = data_dir  # bench: the tutorial joined os.path.dirname(__file__) + 'datasets'

    def preprocess_image(self, image_path):
        full_path = os.path.join(self.current_dir, image_path)
        image = Image.open(full_path).convert("RGB")  # bench: .convert("RGB"); the tutorial crashed on non-RGB files
        image_transform = transforms.Compose([
            transforms.Resize((256, 256)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        ])

        return image_transform(image)

    def __getitem__(self, index):
        image_path, label = self.data[index]
        image = self.preprocess_image(image_path)
        return image, int(label)

    def __len__(self):
        return len(self.data)


# One epoch of training, a line printed and logged for every step.
def train(model, device, train_dataloader, optimizer, criterion, epoch):
    model.train()
    for iter, (inputs, labels) in enumerate(train_dataloader):
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        print(f'Epoch [{epoch}/{num_epochs}], Iteration [{iter + 1}/{len(TrainDataLoader)}], Loss: {loss.item():.4f}')
        swanlab.log({"train_loss": loss.item()})


# Accuracy on the val set, one photo at a time, the first 30 logged as images.
def test(model, device, test_dataloader, epoch):
    class_name = ["cat", "dog"]
    model.eval()
    correct = 0
    total = 0
    with torch.no_grad():
        images_list = []
        for iter, (inputs, labels) in enumerate(test_dataloader):
            inputs, labels = inputs.to(device), labels.to(device)
            outputs = model(inputs)
            _, predicted = torch.max(outputs.data, 1)

            if iter < 30:
                images_list.append(swanlab.Image(inputs, caption=class_name[predicted.item()]))

            total += labels.size(0)
            correct += (predicted == labels).sum().item()

    accuracy = correct / total * 100
    print(f'Accuracy: {accuracy:.2f}%')
    swanlab.log({"test_acc": accuracy})
    swanlab.log({"Image": images_list})


if __name__ == "__main__":
    # bench: the tutorial had no command line; these four only say where things are and how long it runs.
    parser = argparse.ArgumentParser(description="The tutorial's train.py, as written (for the benchmarks).")
    parser.add_argument("--weights", default="none",
                        help="none, or a .pth state dict of a 1000-class ResNet50 (the tutorial downloaded "
                             "IMAGENET1K_V2; no download here)")
    parser.add_argument("--data-dir", default="datasets", help="folder with train.csv and val.csv")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output-dir", default="checkpoint")
    args = parser.parse_args()

    num_epochs = args.epochs
    lr = 1e-4
    batch_size = 8
    num_classes = 2

    # The device: cuda, then mps, then cpu.
    try:
        use_mps = torch.backends.mps.is_available()
    except AttributeError:
        use_mps = False

    if torch.cuda.is_available():
        device = "cuda"
    elif use_mps:
        device = "mps"
    else:
        device = "cpu"

    swanlab.init(
        experiment_name="ResNet50",
        description="Train ResNet50 for cat and dog classification.",
        config={
            "model": "resnet50",
            "optim": "Adam",
            "lr": lr,
            "batch_size": batch_size,
            "num_epochs": num_epochs,
            "num_class": num_classes,
            "device": device,
        },
        logdir="./logs",
        mode="disabled",  # bench: never a login prompt, nothing written
    )

    TrainDataset = DatasetLoader(os.path.join(args.data_dir, "train.csv"), args.data_dir)
    ValDataset = DatasetLoader(os.path.join(args.data_dir, "val.csv"), args.data_dir)
    TrainDataLoader = DataLoader(TrainDataset, batch_size=batch_size, shuffle=True)
    ValDataLoader = DataLoader(ValDataset, batch_size=1, shuffle=False)

    model = torchvision.models.resnet50(weights=None)  # bench: the tutorial's weights=ResNet50_Weights.IMAGENET1K_V2
    if args.weights != "none":  # bench: the same weights from a local file (the same cost as torchvision's cache)
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))

    # A new head with two outputs: cat, dog.
    in_features = model.fc.in_features
    model.fc = torch.nn.Linear(in_features, num_classes)

    model.to(torch.device(device))
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    for epoch in range(1, num_epochs + 1):
        train(model, device, TrainDataLoader, optimizer, criterion, epoch)  # Train for one epoch

        if epoch % 4 == 0:  # Test every 4 epochs
            accuracy = test(model, device, ValDataLoader, epoch)

    if not os.path.exists(args.output_dir):  # bench: --output-dir, the tutorial's "checkpoint"
        os.makedirs(args.output_dir)
    torch.save(model.state_dict(), os.path.join(args.output_dir, 'latest_checkpoint.pth'))
    print("Training complete")
