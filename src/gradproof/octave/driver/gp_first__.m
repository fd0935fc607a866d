function gp_first__(f, theta, dir)
  % [J, grad] at theta, both as returned, into dir/out.mat.
  [J, grad] = f(theta);
  save('-mat', fullfile(dir, 'out.mat'), 'J', 'grad');
end
