"""Train the demo model: a logistic regression on scikit-learn's bundled iris data."""

import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

x, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(x, y)
joblib.dump(model, sys.argv[1] if len(sys.argv) > 1 else "model.joblib")
