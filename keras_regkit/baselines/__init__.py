"""Reference training set-ups built from keras_regkit's parts."""
