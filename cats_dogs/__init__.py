"""What the scripts at the top level share. Read the scripts first (load_datasets.py, train.py, app.py); come here
when one of them calls into this package. Each module does one job:

The photos
    csv_rows        the tutorial's `path,label` CSVs, checked row by row (CsvError names every bad line)
    classes         class names: classes.txt, or cat/dog
    images          opening any photo a user has, or saying in plain words why it cannot be used
    preprocessing   the one preprocessing: squash to size×size (uint8), normalize with ImageNet's mean and std
    augmentation    training's random crop and flip (light), plus TrivialAugment and erasing (strong)
    photo_cache     every photo decoded once, kept on disk beside the CSVs
    photo_batches   ImageList: photos in batches, written into one uint8 block, broken files left out
    loaders         train.py's DataLoaders, each epoch's order from its own seed, each process's share under torchrun
    downloads       prepare_data.py --download: the sample photos, fetched safely
    cleaning        an import's checks: each photo decoded once; broken ones, copies and (crawls) resized copies out
    crawl           prepare_data.py --crawl: each keyword's class folder topped up until enough photos pass them
    image_search    Baidu's and Bing's image search through icrawler: polite, quiet, every download untrusted
    zips            users' zip archives: real member names, bad members refused one by one

The model and its files
    model           a torchvision ResNet with one output per class
    weights         reading weights files (ImageNet's, a user's .pth) without ever running code from them
    checkpoint      what a checkpoint holds; the one writer and the one reader
    atomic          files written whole or not at all: a unique temporary file, fsync, rename

Training (train.py)
    settings        the command line resolved once into frozen TrainSettings: nothing writes to it afterwards
    device          cuda, mps or cpu; bf16 only where it is measured faster than fp32
    process         the console's encoding, glibc's memory keeping
    random_state    seeding, the generators' states for a checkpoint, putting them back after a look ahead
    recipe          optimizer, learning-rate schedule, EMA, the rule that picks the best epoch
    resume          --resume, exactly: where a run goes on, --save-every's checkpoints, killed writers' leftovers
    class_balance   imbalanced classes: the warnings, --balance's class weights and sampling weights
    intervals       every accuracy's 95% interval (Wilson; balanced accuracy's by MOVER), McNemar's paired test
    served_epoch    --best-rule paired, and the summary's served-epoch-against-the-last line
    epochs          train_one_epoch and evaluate
    frozen_backbone --freeze-backbone: features computed once (INT8 from 300 photos), the head trained on them
    lr_finder       --lr-find and --lr auto: fastai's learning-rate range test
    distributed     torchrun: several processes, one model
    run_folder      what a run leaves behind: checkpoints, args.json, results.csv, curves, train_batch.jpg
    checkpoint_writes train.py's checkpoints written by a thread while the next epoch trains
    tracking        one log call feeding SwanLab (or a stand-in where it is not installed) and TensorBoard
    tensorboard_log --tensorboard: the event files, one folder per run, purged on --resume
    photo_grid      photos with a caption under each, in one picture (train_batch.jpg, TensorBoard's gallery)

Serving (app.py, desktop.py, predict.py, evaluate.py, export.py, review.py)
    inference       fast copies of a model for answering photos, flip TTA
    engines         onnxruntime and OpenVINO (INT8 when it passes its check), cached beside the checkpoint
    onnx_export     the model as an ONNX file (TorchScript's exporter, torch.export's where that fails)
    engine_build    where the engine is built: after training, in a low-priority process for the page
    explain         the page's Grad-CAM heat map, and the ImageNet check that a photo shows a cat or dog at all
    answers         what an answer is, for the page and the window: verdict, table row, CSV, the engine prepared
    translations    the pages' and the window's words in English and Chinese
    uploads         what a browser uploads: one photo, opened or refused with the page's message
    photo_files     files and zips of photos, each opened or given a reason (the page's many photos, the window's)
    desktop_classifier  desktop.py's model: a checkpoint answering as the page does, its engine build ended on close
    desktop_worker  desktop.py's worker thread: load, classify, draw the heat map, off the window's thread
    desktop_window  desktop.py's window (PySide6): photos opened or dropped, the table, the verdict, the CSV
    review_decisions review.py's clicks, saved at once, applied to the CSVs with backups
    hosting         who can reach a page: loopback or not (--host), a login (--auth)

Sharing (export.py --space, --ncnn)
    space           a Hugging Face Space folder: app.py, the modules it imports, the checkpoint, examples
    phone_export    ncnn for phone apps through pnnx, checked with ncnn's runtime; model.json beside it
"""
