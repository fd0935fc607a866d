function seed_backprop_vars(file, n_visible, n_hidden)
% Saves theta (the seed network's weights, uniform in +-4*sqrt(6/(n_hidden+n_visible)), as
% [encoder(:); decoder(:)]) and x (one example in [0, 1], a row) to file, for seed_backprop.m.
  rand('twister', 0);
  r = 4 * sqrt(6 / (n_hidden + n_visible));
  encoder = (2 * rand(n_visible, n_hidden) - 1) * r;
  decoder = (2 * rand(n_hidden, n_visible) - 1) * r;
  theta = [encoder(:); decoder(:)];
  x = rand(1, n_visible);
  save('-mat', file, 'theta', 'x');
end
