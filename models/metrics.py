"""Classification metrics (numpy only, so the runtime install can evaluate)."""

import numpy as np


def classification_metrics(y_true, y_pred, n_classes: int) -> dict[str, float]:
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    recalls, f1s = [], []
    for c in range(n_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        support = np.sum(y_true == c)
        predicted = np.sum(y_pred == c)
        recall = tp / support if support else 0.0
        precision = tp / predicted if predicted else 0.0
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "macro_recall": round(float(np.mean(recalls)), 4),
        "macro_f1": round(float(np.mean(f1s)), 4),
        "accuracy": round(float(np.mean(y_true == y_pred)), 4) if len(y_true) else 0.0,
        "n": int(len(y_true)),
    }
