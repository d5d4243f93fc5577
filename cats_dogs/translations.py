"""The web pages' and the desktop app's words, in English and simplified Chinese, and how a request's language is chosen.

app.py shows these: its fixed words through Gradio's I18n (the browser picks), and the answers it computes
(verdicts, notes, errors) in the language of the request that asked. The words of its inputs (photo, threshold,
check boxes, camera) are declared with the inputs themselves, in app.py's CONTROLS, and join PAGE_WORDS in
page_translations. review.py's page does the same with REVIEW_TEXTS. desktop.py's window shows DESKTOP_WORDS and the
same answers, in the system's language or --language's. Gradio is imported only by page_translations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cats_dogs.checkpoint import Checkpoint
from cats_dogs.images import explain_unreadable

if TYPE_CHECKING:  # only the web pages' functions take Gradio's types: the desktop app (desktop.py) never imports it
    import gradio as gr

LANGUAGES = ("en", "zh")
DOUBT_THRESHOLD = 0.7  # below this top probability the pages say "not sure" (TEXTS["not_sure"])

# The page's fixed words (tabs, labels, buttons), as (English, simplified Chinese), all handed to Gradio's
# frontend (gr.I18n), which shows the browser's own. The words of the page's inputs are declared with the
# inputs themselves (app.py's CONTROLS) and handed over with these.
PAGE_WORDS: dict[str, tuple[str, str]] = {
    "one_photo": ("One photo", "单张照片"),
    "probabilities": ("Probabilities", "概率"),
    "heatmap": ("Heat map: red areas drove the answer most", "热力图：越红的地方，对结果的影响越大"),
    "examples": ("Examples", "示例"),
    "many_photos": ("Many photos", "多张照片"),
    "classify_all": ("Classify all", "全部分类"),
    "results": ("Results", "结果"),
    "download_csv": ("Download the table as CSV", "下载表格（CSV）"),
    "live": ("Live camera", "实时摄像头"),
    "live_how": ("Click the camera box to allow the camera, then press Record: the answer beside it follows the camera "
                 "a few times a second. Browsers allow the camera only on localhost or over https.",
                 "点击摄像头区域，允许使用摄像头，再点“录制”：旁边的回答每秒更新几次。"
                 "浏览器只在 localhost 或 https 网址上允许使用摄像头。"),
}
# export.py --web's page (cats_dogs/web/): its own words, beside some of PAGE_WORDS and TEXTS (web_export.page_words).
WEB_WORDS: dict[str, tuple[str, str]] = {
    "choose": ("Choose a photo, or drop one here", "选择一张照片，或者拖到这里"),
    "start_camera": ("Start the camera", "打开摄像头"),
    "stop_camera": ("Stop the camera", "关闭摄像头"),
    "loading": ("Loading the model…", "正在加载模型……"),
    "private": ("The model runs in this browser: photos never leave this device.",
                "模型在这个浏览器里运行：照片不会离开这台设备。"),
    "unusable_photo": ("This file could not be used as a photo.", "这个文件无法作为照片使用。"),
    "no_camera": ("The camera could not be opened ({reason}). Browsers allow it only over https or on localhost.",
                  "无法打开摄像头（{reason}）。浏览器只在 https 或 localhost 网址上允许使用摄像头。"),
    "not_served": ("This page must be served by a web server (python -m http.server), not opened as a file.",
                   "这个页面要通过网页服务器打开（python -m http.server），不能直接双击打开文件。"),
    "load_failed": ("The model could not be loaded: {reason}", "无法加载模型：{reason}"),
    "speed": ("{ms} ms in this browser", "在这个浏览器里用了 {ms} 毫秒"),
}
# Every answer the page computes (verdicts, notes, errors) and the line about the checkpoint, as (English, simplified
# Chinese), worded per request. Class names are never translated.
TEXTS: dict[str, tuple[str, str]] = {
    "title": ("{names} classifier", "{names} 分类器"),
    "model": ("**Model:** {arch} ({start})", "**模型**：{arch}（{start}）"),
    "scratch": ("trained from scratch", "从零训练"),
    "fine_tuned": ("fine-tuned from {weights}", "基于 {weights} 微调"),
    "classes": ("**Classes:** {names}", "**类别**：{names}"),
    "accuracy": ("**Val accuracy:** {accuracy:.1f}% (epoch {epoch})", "**验证集准确率**：{accuracy:.1f}%（第 {epoch} 轮）"),
    "saved": ("**Saved:** {saved}", "**保存时间**：{saved}"),
    "sure": ("## {best}\n{p:.0%} sure.", "## {best}\n有 {p:.0%} 的把握。"),
    "not_sure": ("## Not sure\nThe best guess is **{best}** at {p:.0%}, below the {threshold:.0%} threshold.",
                 "## 不确定\n最可能是 **{best}**，概率 {p:.0%}，低于 {threshold:.0%} 的阈值。"),
    "not_a_pet": ("this does not look like a cat or a dog", "这看起来既不像猫，也不像狗"),
    "pet_hint": ("⚠️ **Hint: {not_a_pet}.** The original ImageNet classifier gives cats and dogs only {share:.0%}; "
                 "this model only knows {names}, so its answer may mean nothing.",
                 "⚠️ **提示：{not_a_pet}**。原始的 ImageNet 分类器认为它是猫或狗的概率只有 {share:.0%}；"
                 "这个模型只认识 {names}，所以它的回答可能没有意义。"),
    "and": (" and ", "、"),
    "not_sure_note": ("not sure", "不确定"),
    "notes_joined_by": ("; ", "；"),
    "row_unusable": ("could not be used: {reason}", "无法使用：{reason}"),
    "skipped": ("skipped: over {mb} MB", "已跳过：超过 {mb} MB"),
    "skipped_total": ("skipped: the zips add up to over {mb} MB", "已跳过：压缩包解压后总共超过 {mb} MB"),
    "too_large": ("larger than {mb} MB", "超过 {mb} MB"),
    "upload_first": ("Please upload a photo first.", "请先上传一张照片。"),
    "unusable": ("This file could not be used: {reason}. Upload a photo: JPEG, PNG, BMP, GIF or WebP, at most 20 MB.",
                 "这个文件无法使用：{reason}。请上传 JPEG、PNG、BMP、GIF 或 WebP 格式的照片，不超过 20 MB。"),
    "busy": ("This application is currently busy. Please try again.", "网页正忙，请稍后再试。"),
    "choose_first": ("Please choose some photos, or a .zip of photos, first.", "请先选择照片，或装有照片的 .zip 压缩包。"),
    "only_first": ("Only the first {n} photos were classified.", "只分类了前 {n} 张照片。"),
    "classifying": ("classifying", "正在分类"),
    "photos_unit": ("photos", "张"),
}
# desktop.py's window, as (English, simplified Chinese); it also shows PAGE_WORDS' "probabilities", "heatmap" and
# "results", and TEXTS' verdicts, notes and reasons, as the page does.
DESKTOP_WORDS: dict[str, tuple[str, str]] = {
    "open_photos": ("Open photos…", "打开照片…"),
    "open_folder": ("Open a folder…", "打开文件夹…"),
    "open_checkpoint": ("Checkpoint…", "选择模型…"),
    "save_csv": ("Save as CSV…", "另存为 CSV…"),
    "threshold": ("Say 'not sure' below", "低于此概率时回答“不确定”"),
    "show_heatmap": ("Heat map", "热力图"),
    "drop_here": ("Drop photos or folders here, or open them with the buttons above.",
                  "把照片或文件夹拖到这里，或者用上面的按钮打开。"),
    "photos_filter": ("Photos", "照片"),
    "checkpoints_filter": ("Checkpoints", "模型文件"),
    "all_files": ("All files", "所有文件"),
    "loading": ("Loading {path} …", "正在加载 {path} …"),
    "no_checkpoint": ("No checkpoint yet: train one (python train.py), or choose one with “Checkpoint…”.",
                      "还没有模型：先训练一个（python train.py），或者点“选择模型…”选一个。"),
    "cannot_load": ("Cannot load {path}: {reason}", "无法加载 {path}：{reason}"),
    "no_photos": ("No photos in {path}.", "{path} 里没有照片。"),
    "progress": ("{done} of {count} photos classified", "已分类 {done} / {count} 张照片"),
    "saved_csv": ("Saved {path}", "已保存 {path}"),
    "cannot_save": ("Cannot save {path}: {reason}", "无法保存 {path}：{reason}"),
    "nothing_to_save": ("Nothing to save yet: open some photos first.", "还没有可保存的结果：请先打开照片。"),
}
# images.explain_unreadable's English reasons in Chinese; a reason not listed here stays in English.
REASONS_ZH = [(r"too many pixels \(over (\d+) megapixels\).*", "像素太多（超过 {0} 百万像素），可能是恶意的“解压炸弹”，已拒绝"),
              (r"the file is cut short.*", "文件不完整（比如下载中断了）"),
              (r"not an image file.*", "不是图片文件，或者是 Pillow 读不了的格式"),
              (r"cannot be decoded \((.*)\)", "无法解码（{0}）"),
              # zips.member_problem and zips.read_problem: a zip's member that is not unpacked
              (r"a path outside the archive's folder \(absolute or with \.\.\), not unpacked",
               "路径在压缩包的文件夹之外（绝对路径或含 ..），未解压"),
              (r"encrypted \(password-protected\), not unpacked", "已加密（有密码），未解压"),
              (r"compressed with (.*), which Python cannot unpack: re-zip it with 7-Zip or as a plain zip",
               "用 {0} 压缩，Python 无法解压：请用 7-Zip 重新压缩，或压缩成普通 zip"),
              (r"damaged inside the archive \((.*)\)", "压缩包里的这个文件已损坏（{0}）")]
# Tables' column names, as (English, simplified Chinese): app.py's many-photos table (and its CSV), review.py's ranking.
COLUMNS: dict[str, tuple[list[str], list[str]]] = {
    "results": (["file", "class", "probability", "note"], ["文件", "类别", "概率", "备注"]),
    "ranking": (["rank", "split", "file", "given", "predicted", "confidence", "loss", "decision"],
                ["排名", "数据集", "文件", "标注", "预测", "置信度", "损失", "决定"]),
}


def text(key: str, language: str = "en", **values: Any) -> str:
    """One of TEXTS in the given language, its {placeholders} filled in."""
    return TEXTS[key][LANGUAGES.index(language)].format(**values)


def desktop_text(key: str, language: str = "en", **values: Any) -> str:
    """One of desktop.py's words (DESKTOP_WORDS, else PAGE_WORDS) in the given language, {placeholders} filled in."""
    return (DESKTOP_WORDS.get(key) or PAGE_WORDS[key])[LANGUAGES.index(language)].format(**values)


def columns(table: str, language: str = "en") -> list[str]:
    """A table's column names (COLUMNS) in the given language."""
    return list(COLUMNS[table][LANGUAGES.index(language)])


def language_of(request: gr.Request | None, forced: str = "auto") -> str:
    """'zh' or 'en' for whoever sent the request: --language when given, else the browser's first language.

    Gradio's frontend picks the page's fixed words by the browser's language too, so labels and answers agree.
    Scripts send no Accept-Language and get English, as before.
    """
    if forced != "auto":
        return forced
    headers = getattr(request, "headers", None) or {}
    first = (headers.get("accept-language") or "").split(",")[0].strip().lower()
    return "zh" if first.startswith("zh") else "en"


def reason_in(language: str, error: Exception) -> str:
    """images.explain_unreadable's plain words for a failed upload, in the given language."""
    return in_language(language, explain_unreadable(error))


def in_language(language: str, reason: str) -> str:
    """A reason in plain English (images.explain_unreadable's, zips.member_problem's) in the given language."""
    for pattern, chinese in REASONS_ZH if language == "zh" else []:
        if found := re.fullmatch(pattern, reason, flags=re.DOTALL):
            return chinese.format(*found.groups())
    return reason


def page_translations(meta: Checkpoint, checkpoint_path: Path, language: str = "auto",
                      control_words: dict[str, tuple[str, str]] | None = None) -> gr.I18n:
    """app.py's page: its fixed words (PAGE_WORDS, and its controls' words) in both languages, for Gradio's frontend.

    The frontend looks a zh-CN browser's words up under "zh-CN", then "zh", then "en": so "zh" serves every
    Chinese browser and "en" all others, and a forced --language puts its words under both.
    """
    import gradio as gr

    words = {}
    for index, lang in enumerate(LANGUAGES):
        title = text("title", lang, names=" vs ".join(name.capitalize() for name in meta["class_names"]))
        words[lang] = {key: both[index] for key, both in (PAGE_WORDS | (control_words or {})).items()}
        words[lang]["header"] = f"# {title}\n{describe(meta, checkpoint_path, lang)}"
    return gr.I18n(**{lang: words[lang if language == "auto" else language] for lang in LANGUAGES})


def describe(meta: Checkpoint, checkpoint_path: Path, language: str = "en") -> str:
    """What is loaded, in one line of Markdown for the top of the page."""
    weights = str(meta["weights"] or "unknown")
    start = text("scratch", language) if weights.lower() == "none" else text("fine_tuned", language, weights=weights)
    parts = [text("model", language, arch=meta["arch"], start=start),
             text("classes", language, names=", ".join(meta["class_names"]))]
    accuracy = meta["metrics"].get("val_acc")
    if accuracy is not None:
        parts.append(text("accuracy", language, accuracy=accuracy, epoch=meta["epoch"]))
    if meta["saved_at"]:
        parts.append(text("saved", language, saved=meta["saved_at"].replace("T", " ")))
    return " · ".join(parts + [f"`{checkpoint_path}`"])


# review.py's page, as (English, simplified Chinese).
REVIEW_TEXTS: dict[str, tuple[str, str]] = {
    "title": ("Review the labels", "检查标注"),
    "intro": ("{count} photos ({splits}), worst first: the model `{checkpoint}` disagrees most with the labels at the top. "
              "Every click is saved to `{decisions}`; **Apply** writes new CSVs and keeps the old ones as `.bak-<time>`.",
              "共 {count} 张照片（{splits}），问题最大的排在最前：模型 `{checkpoint}` 最不认同这些标注。"
              "每次点击都会立即保存到 `{decisions}`；点 **应用** 才会写新的 CSV，旧文件保留为 `.bak-<时间>`。"),
    "photo": ("Photo", "照片"),
    "keep": ("Keep", "保留"),
    "relabel": ("Change to {name}", "改为 {name}"),
    "exclude": ("Exclude", "排除"),
    "previous": ("← Previous", "← 上一张"),
    "next": ("Next →", "下一张 →"),
    "ranking": ("Ranking (click a row to open it)", "排名（点击一行即可打开）"),
    "apply": ("Apply: write the new train.csv and val.csv", "应用：写入新的 train.csv 和 val.csv"),
    "details": ("### {rank} of {count} · `{file}`\n**Given label:** {given} · **Predicted:** {predicted} ({p:.0%}) · "
                "**Loss:** {loss:.2f}\n\n**Your decision:** {decision}",
                "### 第 {rank} / {count} 张 · `{file}`\n**标注**：{given} · **预测**：{predicted}（{p:.0%}）· "
                "**损失**：{loss:.2f}\n\n**你的决定**：{decision}"),
    "unreadable": ("### {rank} of {count} · `{file}`\n**Given label:** {given} · **Cannot be read:** {problem}\n\n"
                   "**Your decision:** {decision}",
                   "### 第 {rank} / {count} 张 · `{file}`\n**标注**：{given} · **无法读取**：{problem}\n\n"
                   "**你的决定**：{decision}"),
    "undecided": ("none yet", "还没有"),
    "kept": ("keep", "保留"),
    "relabelled": ("change to {name}", "改为 {name}"),
    "excluded": ("exclude", "排除"),
    "applied": ("`{csv}`: {relabelled} relabelled, {excluded} excluded; the old file is `{backup}`.",
                "`{csv}`：改了 {relabelled} 个标注，排除了 {excluded} 张；旧文件是 `{backup}`。"),
    "nothing": ("Nothing to apply: no decision changes the CSVs.", "没有要应用的改动：所有决定都不改变 CSV。"),
    "retrain": ("Train again to use them: `python train.py`.", "重新训练即可使用：`python train.py`。"),
}
