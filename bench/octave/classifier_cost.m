function [J, grad] = classifier_cost(theta, n_input, n_hidden, n_labels, X, y, lambda)
% The classic course classifier n_input-n_hidden-n_labels, written vectorised: sigmoid layers,
% biases as column 1 of each weight matrix, one example per row of X, labels 1..n_labels in y,
% cross-entropy averaged over the m examples plus lambda/(2m) times the squared weights (biases
% left out). theta = [Theta1(:); Theta2(:)].
  Theta1 = reshape(theta(1:n_hidden * (n_input + 1)), n_hidden, n_input + 1);  % (n_hidden, n_input+1)
  Theta2 = reshape(theta(n_hidden * (n_input + 1) + 1:end), n_labels, n_hidden + 1);  % (n_labels, n_hidden+1)
  m = size(X, 1);
  a1 = [ones(m, 1) X];  % (m, n_input+1)
  a2 = [ones(m, 1) 1 ./ (1 + exp(-a1 * Theta1'))];  % (m, n_hidden+1)
  h = 1 ./ (1 + exp(-a2 * Theta2'));  % (m, n_labels)
  Y = double(y(:) == 1:n_labels);  % (m, n_labels), one-hot
  J = -sum(sum(Y .* log(h) + (1 - Y) .* log(1 - h))) / m ...
      + lambda / (2 * m) * (sum(sum(Theta1(:, 2:end).^2)) + sum(sum(Theta2(:, 2:end).^2)));
  d3 = h - Y;  % (m, n_labels), dJ/dz3 times m
  d2 = (d3 * Theta2(:, 2:end)) .* a2(:, 2:end) .* (1 - a2(:, 2:end));  % (m, n_hidden)
  Theta1_grad = d2' * a1 / m;  % (n_hidden, n_input+1), like Theta1
  Theta2_grad = d3' * a2 / m;  % (n_labels, n_hidden+1), like Theta2
  Theta1_grad(:, 2:end) = Theta1_grad(:, 2:end) + lambda / m * Theta1(:, 2:end);
  Theta2_grad(:, 2:end) = Theta2_grad(:, 2:end) + lambda / m * Theta2(:, 2:end);
  grad = [Theta1_grad(:); Theta2_grad(:)];
end
