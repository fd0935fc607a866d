function [gp_f__, gp_theta__] = gp_make__(gp_expr__, gp_var__, gp_vars_file__)
  % The user's expression as a function of the parameter vector, and its starting value.
  % The variables load into this workspace, so that the anonymous function captures them.
  if ~isempty(gp_vars_file__)
    load(gp_vars_file__);
  end
  if ~exist(gp_var__, 'var')
    gp_names__ = who();
    gp_names__ = gp_names__(~strncmp(gp_names__, 'gp_', 3));
    error('gradproof:var', 'the parameter vector %s is not among the loaded variables (found: %s)', ...
          gp_var__, strjoin(gp_names__', ', '));
  end
  gp_theta__ = eval(gp_var__);
  if ~(isnumeric(gp_theta__) && isreal(gp_theta__) && isvector(gp_theta__))
    error('gradproof:var', '%s must be a real numeric vector; it is a %s of size %s', ...
          gp_var__, class(gp_theta__), mat2str(size(gp_theta__)));
  end
  gp_theta__ = double(gp_theta__);
  gp_f__ = eval(['@(' gp_var__ ') ' gp_expr__]);
end
